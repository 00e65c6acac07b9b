"""Composing and editing a campaign in the workspace: a plain form on the API's own services.

The form is turned into the API's campaign body (compose_form.py) and saved by the campaigns service, so
every rule (who may send as whom, which recipients are the brand's, templates that render) is the API's.
Preview and "send a test to me" save the campaign as a draft first: both then work on the stored campaign
exactly as ``POST /emails/preview`` and ``POST /emails/:id/test`` do. Sending now or at a time goes through a
confirmation page that names how many addresses it will go to.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.api.deps import ReadConnection, Session
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.campaigns import preview, reads, service
from mailroom.campaigns.audience import audience_count
from mailroom.campaigns.models import EmailCampaign, EmailCampaignAttachment, EmailCampaignRecipient
from mailroom.campaigns.preview import PreviewIn
from mailroom.crm.membership import user_brands
from mailroom.errors import Forbidden, MailroomError, NotFound
from mailroom.sending import testmail
from mailroom.web.compose_choices import choices, contact_options
from mailroom.web.compose_files import (
    MAX_FIELD_BYTES,
    MAX_UPLOADS,
    attached_files,
    chosen_files,
    size_limit,
    store_uploads,
)
from mailroom.web.compose_form import ComposeForm, FormErrors, campaign_body, due_at, kept_fields, service_errors
from mailroom.web.guard import CSRF_FIELD, csrf_anchor, csrf_valid
from mailroom.web.pages import SIGN_IN_PAGE, App, brand_name, not_found, redirect, refused, signed_in, user_row
from mailroom.web.render import render

router = APIRouter(prefix="/app/brands/{brand}/campaigns", include_in_schema=False, route_class=StrictQueryRoute)

ACTIONS = ("save", "preview", "test", "search")
# The rendered message is a stranger's html: it may show images and its own styles, and nothing else. The
# sandbox directive gives it an opaque origin with no script, forms, popups or top navigation, even if it
# is opened outside its iframe.
PREVIEW_POLICY = "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; sandbox; frame-ancestors 'self'"
PREVIEW_HEADERS = {
    "Content-Security-Policy": PREVIEW_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
Contact = Annotated[str, Query(max_length=36)]
PERSONAL_NOT_FROM_MAILBOX = (
    "this campaign goes one message to each recipient (it addresses each one with recipient.*, or was made "
    "individual), and such mail is sent through mailroom's own sending: choose that, or take recipient.* out "
    "to send it from this mailbox"
)


async def _campaign(session: AsyncSession, brand: uuid.UUID, campaign_id: uuid.UUID, user: uuid.UUID) -> EmailCampaign:
    """The brand's live campaign the user may see; NotFound for any other, as the API answers."""
    campaign = await service.live_campaign(session, campaign_id, user)
    if campaign.brand != brand:
        raise NotFound("no such campaign", field="id")
    return campaign


def _why_not_editable(campaign: EmailCampaign) -> str | None:
    if campaign.executed_at is not None:
        return "It has already been sent (or is being sent): a sent campaign cannot be changed."
    return None


async def _unshown_parts(session: AsyncSession, campaign: EmailCampaign) -> bool:
    """Whether the campaign holds what this form cannot show (Cc, Bcc, MLS agents, another brand's agents, an
    address tied to a contact, attachments fetched from a URL or shown inline), which saving the form would
    drop or change."""
    item = EmailCampaignRecipient
    odd = select(item.id).where(
        item.campaign == campaign.id,
        item.deleted_at.is_(None),
        (item.send_type != "To")
        | (item.recipient_type == "Agent")
        | ((item.recipient_type == "Brand") & (item.brand != campaign.brand))
        | ((item.recipient_type == "Email") & item.contact.is_not(None)),
    )
    attachment = EmailCampaignAttachment
    attached = select(attachment.id).where(
        attachment.campaign == campaign.id,
        attachment.deleted_at.is_(None),
        attachment.url.is_not(None) | attachment.is_inline,
    )
    return (await session.scalar(odd.limit(1))) is not None or (await session.scalar(attached.limit(1))) is not None


async def _stored_form(session: AsyncSession, campaign: EmailCampaign) -> ComposeForm:
    """The form as it shows the stored campaign, with its recipients and attachments."""
    recipient, attachment = EmailCampaignRecipient, EmailCampaignAttachment
    recipients = await session.scalars(
        select(recipient)
        .where(recipient.campaign == campaign.id, recipient.deleted_at.is_(None))
        .order_by(recipient.created_at, recipient.id)
    )
    attachments = await session.scalars(
        select(attachment)
        .where(attachment.campaign == campaign.id, attachment.deleted_at.is_(None))
        .order_by(attachment.created_at, attachment.id)
    )
    return ComposeForm.from_campaign(campaign, list(recipients), list(attachments))


async def _page(
    request: Request,
    app: App,
    session: AsyncSession,
    brand: uuid.UUID,
    user: uuid.UUID,
    form: ComposeForm,
    *,
    campaign: uuid.UUID | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    **extra: Any,
) -> HTMLResponse:
    brands = await user_brands(session, user)
    offered = await choices(session, brand, user, search=form.contact_search, ticked=form.contacts)
    context: dict[str, Any] = {
        "preview": None,
        "tested": None,
        "test_error": None,
        "saved": False,
        **extra,
    }
    return render(
        "compose.html",
        app.box,
        csrf_anchor(request),
        status=status,
        user=await user_row(session, user),
        brand=brand,
        brand_name=brand_name(brands, brand),
        campaign=campaign,
        form=form,
        errors=errors or {},
        choices=offered,
        # Those found or ticked, and the one chosen before (found by an earlier search).
        preview_contacts=offered.contacts
        + [c for c in await contact_options(session, brand, [form.preview_contact]) if c not in offered.contacts],
        attachments=await attached_files(session, brand, user, form.attachments),
        attachment_limit=size_limit(form.mailbox),
        **context,
    )


async def _save(
    request: Request,
    app: App,
    session: AsyncSession,
    conn: Any,
    brand: uuid.UUID,
    user: uuid.UUID,
    form: ComposeForm,
    *,
    campaign: EmailCampaign | None,
    due: datetime | None,
) -> uuid.UUID:
    """Create or replace the campaign through the campaigns service; FormErrors when it refuses."""
    renderer = request.app.state.renderer
    private = app.settings.allow_private_attachment_links
    body = campaign_body(form, brand, due=due, kept=kept_fields(campaign) if campaign else None)
    try:
        # Only a campaign sent from a mailbox needs to know first whether it goes one message to each recipient
        # (the templates are rendered once more for it): the API would save it and quietly send it through
        # mailroom's own sending.
        if form.mailbox and (
            body.individual or (await service.check_templates(body.subject, body.html, body.text, renderer))[0]
        ):
            raise FormErrors({"mailbox": PERSONAL_NOT_FROM_MAILBOX})
        if campaign is None:
            actor = service.Actor(user=user, brand=brand, allow_private_links=private)
            return (await service.create_campaign(session, conn, body, actor, renderer=renderer)).id
        await service.update_campaign(session, campaign.id, body, user, renderer=renderer, allow_private_links=private)
        return campaign.id
    except MailroomError as exc:
        raise service_errors(exc) from None


def _edit_url(brand: uuid.UUID, campaign: uuid.UUID, **query: str) -> str:
    tail = f"?{urlencode(query)}" if query else ""
    return f"/app/brands/{brand}/campaigns/{campaign}/edit{tail}"


async def _submitted(
    request: Request,
    app: App,
    session: AsyncSession,
    conn: Any,
    brand: uuid.UUID,
    user: uuid.UUID,
    campaign: EmailCampaign | None,
) -> Response:
    """One press of the form's buttons: search contacts, save, preview or test. Files chosen are stored and
    attached whichever button it was."""
    async with request.form(max_files=MAX_UPLOADS + 1, max_part_size=MAX_FIELD_BYTES) as posted:
        if not csrf_valid(app.box, request, posted.get(CSRF_FIELD)):
            return refused(request, app)
        form = ComposeForm.from_post(posted)
        action = posted.get("action")
        campaign_id = campaign.id if campaign else None
        try:
            storage = request.app.state.storage
            limit = size_limit(form.mailbox)
            form.attachments += await store_uploads(
                request.app.state.sessionmaker, storage, user, brand, chosen_files(posted), limit
            )
        except FormErrors as rejected:
            return await _page(
                request, app, session, brand, user, form, campaign=campaign_id, errors=rejected.errors, status=400
            )
    if action not in ACTIONS or action == "search":
        return await _page(request, app, session, brand, user, form, campaign=campaign_id)
    try:
        due = due_at(form, datetime.now(UTC)) if action == "save" else None
        # Sending goes through the confirmation: until it is confirmed the campaign waits as a draft.
        saved = await _save(request, app, session, conn, brand, user, form, campaign=campaign, due=None)
    except FormErrors as rejected:
        return await _page(
            request, app, session, brand, user, form, campaign=campaign_id, errors=rejected.errors, status=400
        )
    if action == "preview":
        return redirect(_edit_url(brand, saved, preview="1", contact=form.preview_contact))
    if action == "test":
        try:
            queued = await testmail.queue_test(session, request.app.state.renderer, saved, user)
        except MailroomError as exc:
            reason = exc.message.removeprefix(f"{exc.field}: ") if exc.field else exc.message
            return await _page(request, app, session, brand, user, form, campaign=saved, test_error=reason)
        return redirect(_edit_url(brand, saved, tested=queued["to"]))
    if due is None:
        return redirect(f"/app/brands/{brand}/campaigns")
    when = {"schedule": form.schedule, "send_at": form.send_at} if form.schedule == "at" else {"schedule": "now"}
    return redirect(f"/app/brands/{brand}/campaigns/{saved}/confirm?{urlencode(when)}")


@router.get("/new")
async def new_form(request: Request, app: App, session: Session, brand: uuid.UUID) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    if not any(id_ == brand for id_, _ in await user_brands(session, user)):
        return not_found(request, app, user=await user_row(session, user))
    return await _page(request, app, session, brand, user, ComposeForm(sender=str(user)))


@router.post("/new")
async def create(request: Request, app: App, session: Session, conn: ReadConnection, brand: uuid.UUID) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    try:
        await reads.require_member(conn, user, brand)
    except (Forbidden, NotFound):
        return not_found(request, app, user=await user_row(session, user))
    return await _submitted(request, app, session, conn, brand, user, None)


async def _editable(
    request: Request, app: App, session: AsyncSession, brand: uuid.UUID, campaign_id: uuid.UUID, user: uuid.UUID
) -> EmailCampaign | Response:
    """The campaign when this form may change it, else the page that says why not."""
    try:
        campaign = await _campaign(session, brand, campaign_id, user)
    except NotFound:
        return not_found(request, app, user=await user_row(session, user))
    reason = _why_not_editable(campaign)
    if reason is None and await _unshown_parts(session, campaign):
        reason = (
            "It has Cc or Bcc recipients, MLS agents or attachments, which this page cannot show yet: "
            "change it through the API."
        )
    if reason is not None:
        return render(
            "compose_refused.html",
            app.box,
            csrf_anchor(request),
            status=409,
            user=await user_row(session, user),
            brand=brand,
            subject=campaign.subject,
            reason=reason,
        )
    return campaign


@router.get("/{campaign_id}/edit")
async def edit_form(
    request: Request,
    app: App,
    session: Session,
    brand: uuid.UUID,
    campaign_id: uuid.UUID,
    preview: Annotated[str, Query(max_length=1)] = "",
    contact: Contact = "",
    tested: Annotated[str, Query(max_length=320)] = "",
) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    campaign = await _editable(request, app, session, brand, campaign_id, user)
    if isinstance(campaign, Response):
        return campaign
    form = await _stored_form(session, campaign)
    form.preview_contact = contact
    if await _text_made_from_html(request, campaign):
        # Shown empty, as it was typed: saved so, it is made again from the html as that changes.
        form.text = ""
    shown = await _preview(request, session, brand, campaign.id, user, contact) if preview else None
    return await _page(request, app, session, brand, user, form, campaign=campaign.id, preview=shown, tested=tested)


async def _text_made_from_html(request: Request, campaign: EmailCampaign) -> bool:
    """Whether the stored text is the one the service made from the html (the form left it empty)."""
    if not campaign.html or not campaign.text:
        return False
    try:
        _, derived = await service.check_templates(campaign.subject, campaign.html, None, request.app.state.renderer)
    except MailroomError:
        return False
    return derived == campaign.text


@router.post("/{campaign_id}/edit")
async def edit(
    request: Request, app: App, session: Session, conn: ReadConnection, brand: uuid.UUID, campaign_id: uuid.UUID
) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    campaign = await _editable(request, app, session, brand, campaign_id, user)
    if isinstance(campaign, Response):
        return campaign
    return await _submitted(request, app, session, conn, brand, user, campaign)


def _contact_id(contact: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(contact) if contact else None
    except ValueError:
        return None


async def _preview(
    request: Request, session: AsyncSession, brand: uuid.UUID, campaign: uuid.UUID, user: uuid.UUID, contact: str
) -> dict[str, Any]:
    """What POST /emails/preview answers for the stored campaign, or the refusal it would answer."""
    body = PreviewIn(campaign=campaign, contact=_contact_id(contact))
    try:
        message = await preview.preview(session, request.app.state.renderer, body, user=user, brand=None)
    except MailroomError as exc:
        return {"error": exc.message}
    query = urlencode({"contact": contact}) if contact else ""
    return {
        **message,
        "error": None,
        "document": f"/app/brands/{brand}/campaigns/{campaign}/preview-document" + (f"?{query}" if query else ""),
    }


@router.get("/{campaign_id}/preview-document")
async def preview_document(
    request: Request, session: Session, brand: uuid.UUID, campaign_id: uuid.UUID, contact: Contact = ""
) -> Response:
    """The rendered html alone, under a policy of its own, for the compose page's sandboxed iframes."""
    user = await signed_in(request, session)
    missing = Response("not found", status_code=404, media_type="text/plain", headers=PREVIEW_HEADERS)
    if user is None:
        return missing
    try:
        await _campaign(session, brand, campaign_id, user)
    except NotFound:
        return missing
    shown = await _preview(request, session, brand, campaign_id, user, contact)
    if shown["error"] is not None:
        return Response(shown["error"], status_code=400, media_type="text/plain", headers=PREVIEW_HEADERS)
    if shown["html"] is None:
        return Response(shown["text"], media_type="text/plain; charset=utf-8", headers=PREVIEW_HEADERS)
    return HTMLResponse(shown["html"], headers=PREVIEW_HEADERS)


@router.get("/{campaign_id}/confirm")
async def confirm_form(
    request: Request,
    app: App,
    session: Session,
    brand: uuid.UUID,
    campaign_id: uuid.UUID,
    schedule: Annotated[str, Query(pattern="^(now|at)$")] = "now",
    send_at: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    campaign = await _editable(request, app, session, brand, campaign_id, user)
    if isinstance(campaign, Response):
        return campaign
    form = ComposeForm(schedule=schedule, send_at=send_at)
    try:
        due = due_at(form, datetime.now(UTC))
    except FormErrors:
        return redirect(_edit_url(brand, campaign.id))
    return render(
        "compose_confirm.html",
        app.box,
        csrf_anchor(request),
        user=await user_row(session, user),
        brand=brand,
        campaign=campaign,
        recipients=await audience_count(session, campaign.id),
        schedule=schedule,
        send_at=send_at,
        due=None if schedule == "now" else due,
        # A time already past is taken as the API takes it: the campaign goes out at once.
        past=schedule == "at" and due is not None and due < datetime.now(UTC),
    )


@router.post("/{campaign_id}/confirm")
async def confirm(
    request: Request, app: App, session: Session, conn: ReadConnection, brand: uuid.UUID, campaign_id: uuid.UUID
) -> Response:
    """Schedule the stored campaign as it is, for the time confirmed (now: the moment of the press)."""
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    posted = await request.form()
    if not csrf_valid(app.box, request, posted.get(CSRF_FIELD)):
        return refused(request, app)
    campaign = await _editable(request, app, session, brand, campaign_id, user)
    if isinstance(campaign, Response):
        return campaign
    form = await _stored_form(session, campaign)
    form.schedule = "at" if posted.get("schedule") == "at" else "now"
    form.send_at = str(posted.get("send_at") or "")
    try:
        await _save(
            request, app, session, conn, brand, user, form, campaign=campaign, due=due_at(form, datetime.now(UTC))
        )
    except FormErrors as rejected:
        return await _page(
            request, app, session, brand, user, form, campaign=campaign.id, errors=rejected.errors, status=400
        )
    return redirect(f"/app/brands/{brand}/campaigns")
