"""Campaign endpoints of the API document. Thin: parse, call a service, wrap."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import WithJsonSchema

from mailroom.api.auth import BRAND_HEADER, CurrentCaller, brand_from_request
from mailroom.api.deps import ReadConnection, Session
from mailroom.api.envelope import Ok, OkList, ORJSONResponse, ok, ok_list
from mailroom.api.paging import Limit, Start
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.campaigns import listing, preview, quota, reads, service
from mailroom.campaigns.answers import VERSION_SQL, campaign_emails_json, campaigns_json
from mailroom.campaigns.listing import ORDER_PATTERN
from mailroom.campaigns.preview import PreviewIn, PreviewOut
from mailroom.campaigns.reads import EMAIL_ORDER, EMAIL_ORDER_PATTERN
from mailroom.campaigns.schemas import (
    CampaignEmailOut,
    CampaignIn,
    CampaignOut,
    IndividualCampaignIn,
    NotificationsIn,
)
from mailroom.campaigns.views import (
    ASSOCIATIONS,
    ASSOCIATIONS_PATTERN,
    campaign_emails_page,
    campaigns_out,
    parse_associations,
)
from mailroom.config import Settings
from mailroom.crm.membership import required
from mailroom.db import driver_connection
from mailroom.sending import testmail
from mailroom.sending.testmail import QueuedTestOut

router = APIRouter(tags=["email campaigns"], route_class=StrictQueryRoute)

# The campaign routes' ids are `{id:uuid}`: a path such as /emails/events, which another route takes with
# another method, is then no id, and is answered 405 naming that route's methods. A mistyped id is named in
# a 400 all the same (api/errors.py).

# The document's account of the values the route's own checks take; those checks word the refusals.
AssociationValue = Annotated[str, WithJsonSchema({"type": "string", "pattern": ASSOCIATIONS_PATTERN})]
EmailOrder = Annotated[str, WithJsonSchema({"type": "string", "pattern": EMAIL_ORDER_PATTERN})]
CampaignOrder = Annotated[str, WithJsonSchema({"type": "string", "pattern": ORDER_PATTERN})]


async def _associations(
    listed: Annotated[
        list[AssociationValue] | None,
        Query(
            alias="associations[]",
            description=f"Any of {', '.join(sorted(ASSOCIATIONS))} (repeat the parameter or separate with commas)",
        ),
    ] = None,
    bare: Annotated[list[str] | None, Query(alias="associations", include_in_schema=False)] = None,
) -> frozenset[str]:
    """The associations asked for, as `associations[]` or, as older clients send them, bare `associations`:
    both are declared here, so neither is an unknown parameter to the route."""
    return parse_associations([*(listed or []), *(bare or [])])


Associations = Annotated[frozenset[str], Depends(_associations)]


def _private_links(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    return settings.allow_private_attachment_links


async def _answer(session: Session, campaign_id: uuid.UUID, user: uuid.UUID, assoc: frozenset[str]) -> ORJSONResponse:
    """The campaign as the write left it, read in the write's own transaction."""
    conn = await driver_connection(session)
    campaign = await reads.visible_campaign(conn, campaign_id, user)
    return ok((await campaigns_out(conn, [campaign], assoc, reader=user))[0])


async def _create(
    request: Request,
    body: CampaignIn,
    caller: CurrentCaller,
    session: Session,
    conn: ReadConnection,
    associations: frozenset[str],
    individual: bool,
) -> ORJSONResponse:
    """A new campaign is one statement (service.create_campaign), on an autocommit connection: no
    transaction around it. The checks that need other rows (rarely: named lists, contacts, files,
    credentials, another sender) read through the session, which connects only if one does.

    The caller's membership of the brand is checked by that statement too, not in a round trip of its
    own before the checks: a caller who is not a member is still refused with 403 whatever else is wrong
    with the body, as the refusal of the body (or the statement's writing nothing) is answered only once
    their membership has been read apart."""
    brand = brand_from_request(request, body.brand)
    actor = service.Actor(user=caller.user.id, brand=brand, allow_private_links=_private_links(request))
    try:
        campaign = await service.create_campaign(
            session,
            conn,
            body,
            actor,
            renderer=request.app.state.renderer,
            force_individual=individual,
            members_only=True,
        )
    except Exception:
        await reads.require_member(conn, caller.user.id, brand)
        raise
    if campaign is None:
        required(None)  # no role in the brand: the 403 require_member answers
    return ok((await campaigns_out(conn, [campaign], associations, reader=caller.user.id))[0])


@router.post("/emails", response_model=Ok[CampaignOut], summary="Schedule an email campaign (due_at null: a draft)")
async def create_campaign(
    request: Request,
    body: CampaignIn,
    caller: CurrentCaller,
    session: Session,
    conn: ReadConnection,
    associations: Associations,
) -> ORJSONResponse:
    return await _create(request, body, caller, session, conn, associations, individual=False)


@router.post(
    "/emails/individual", response_model=Ok[CampaignOut], summary="Schedule a campaign sent one message per recipient"
)
async def create_individual_campaign(
    request: Request,
    body: IndividualCampaignIn,
    caller: CurrentCaller,
    session: Session,
    conn: ReadConnection,
    associations: Associations,
) -> ORJSONResponse:
    return await _create(request, body, caller, session, conn, associations, individual=True)


@router.post(
    "/emails/preview",
    response_model=Ok[PreviewOut],
    summary="Render a campaign body, or a stored campaign, for a contact or a sample recipient; sends nothing",
)
async def preview_campaign(
    request: Request, body: PreviewIn, caller: CurrentCaller, session: Session
) -> ORJSONResponse:
    brand = body.brand
    if request.headers.get(BRAND_HEADER) is not None or body.brand is not None:
        brand = brand_from_request(request, body.brand)
    answer = await preview.preview(session, request.app.state.renderer, body, user=caller.user.id, brand=brand)
    return ok(answer)


@router.post(
    "/emails/{id:uuid}/test",
    status_code=202,
    response_model=Ok[QueuedTestOut],
    summary="Send a campaign once to the caller's own confirmed address, as a test that counts nowhere",
    description="The campaign as a recipient would get it, rendered for the caller as the recipient, with "
    "`[Test] ` before its subject: on the route it would take (its connected mailbox, else the service's ESP), "
    "From the same sender, with its attachments and headers. Its links are not tracked and `{{ email.url }}` is "
    "empty. Nothing about it is recorded: no recipient or email, no counter, event or quota use, and the "
    "campaign's recipients, schedule and status stay as they are. A draft or a sent campaign can be tested. "
    "The worker sends it within moments; a refusal is logged. Each caller may send "
    f"{testmail.BURST} tests of a campaign in a row, then one every {testmail.REFILL / 60:.0f} minutes.",
)
async def send_test(request: Request, id: uuid.UUID, caller: CurrentCaller, session: Session) -> ORJSONResponse:
    answer = await testmail.queue_test(session, request.app.state.renderer, id, caller.user.id)
    return ok(answer, status_code=202)


@router.put(
    "/emails/{id:uuid}", response_model=Ok[CampaignOut], summary="Replace a campaign that has not been executed"
)
async def update_campaign(
    request: Request,
    id: uuid.UUID,
    body: CampaignIn,
    caller: CurrentCaller,
    session: Session,
    associations: Associations,
) -> ORJSONResponse:
    await service.update_campaign(
        session,
        id,
        body,
        caller.user.id,
        renderer=request.app.state.renderer,
        allow_private_links=_private_links(request),
    )
    return await _answer(session, id, caller.user.id, associations)


@router.put(
    "/emails/{id:uuid}/notifications",
    summary="Turn the sender's notifications for a campaign on or off",
    # As the API document shows: a bare 200, no body.
    response_class=Response,
    responses={200: {"description": "Set; the answer has no body"}},
)
async def set_notifications(id: uuid.UUID, body: NotificationsIn, caller: CurrentCaller, session: Session) -> Response:
    await service.set_notifications(session, id, caller.user.id, body.status)
    return Response(status_code=200)


@router.delete("/emails/{id:uuid}", status_code=204, summary="Delete a campaign; a scheduled one is never sent")
async def delete_campaign(id: uuid.UUID, caller: CurrentCaller, session: Session) -> Response:
    await service.delete_campaign(session, id, caller.user.id)
    return Response(status_code=204)


@router.get("/emails/{id:uuid}", response_model=Ok[CampaignOut], summary="Get an email campaign")
async def get_campaign(
    id: uuid.UUID, caller: CurrentCaller, conn: ReadConnection, associations: Associations
) -> ORJSONResponse:
    campaign = await reads.visible_campaign(conn, id, caller.user.id)
    return ok((await campaigns_out(conn, [campaign], associations, reader=caller.user.id))[0])


@router.get(
    "/emails/{campaign:uuid}/emails",
    response_model=OkList[CampaignEmailOut],
    summary="The recipients of a campaign, with what happened to each",
)
async def campaign_emails(
    request: Request,
    campaign: uuid.UUID,
    caller: CurrentCaller,
    conn: ReadConnection,
    associations: Associations,
    start: Start = 0,
    limit: Limit = 250,
    order: Annotated[EmailOrder | None, Query(description=" | ".join(EMAIL_ORDER) + "; -desc")] = None,
) -> ORJSONResponse:
    ordering = reads.email_order_sql(order)
    if not associations and ordering is not None:
        # Each row kept serialised by its version (campaigns/answers.py); the visibility check in the same statement.
        found, total = await campaign_emails_json(
            conn,
            campaign,
            caller.user.id,
            request.app.state.campaign_answers,
            ordering=ordering,
            start=start,
            limit=limit,
        )
        return ok_list(found, total=total)
    await reads.require_visible(conn, campaign, caller.user.id)
    rows, total = await campaign_emails_page(
        conn, campaign, start=start, limit=limit, order=order, associations=associations
    )
    return ok_list(rows, total=total)


@router.get("/brands/{brand}/emails/campaigns", response_model=OkList[CampaignOut], summary="A brand's campaigns")
async def brand_campaigns(
    request: Request,
    brand: uuid.UUID,
    caller: CurrentCaller,
    conn: ReadConnection,
    associations: Associations,
    status: listing.Status | None = None,
    start: Start = 0,
    limit: Limit = 250,
    order: Annotated[
        CampaignOrder | None,
        Query(description=f"Comma-separated, each of {', '.join(listing.ORDERABLE)}; -desc (e.g. -created_at,+due_at)"),
    ] = None,
) -> ORJSONResponse:
    if not associations:
        # The campaigns' own fields only: each kept serialised, by the version of its row (campaigns/answers.py).
        page, total = await reads.brand_campaigns(
            conn, brand, caller.user.id, status=status, start=start, limit=limit, order=order, version=VERSION_SQL
        )
        return ok_list(await campaigns_json(conn, page, request.app.state.campaign_answers), total=total)
    campaigns, total = await reads.brand_campaigns(
        conn, brand, caller.user.id, status=status, start=start, limit=limit, order=order
    )
    return ok_list(await campaigns_out(conn, campaigns, associations, reader=caller.user.id), total=total)


@router.get(
    "/brands/{brand}/emails/quota",
    response_model=Ok[quota.QuotaOut],
    summary="The caller's monthly quota of email sent through the service (across all their brands)",
    description="Every recipient of a campaign sent through the service's ESP counts, in one shared message or "
    "one per recipient alike; mail sent through the caller's own Gmail or Outlook does not (that is one shared "
    "message within 100 recipients for Gmail, 500 for Outlook; bigger and individual campaigns with a mailbox go "
    "through the ESP and count). `executed` counts them for campaigns executed this calendar month (UTC), "
    "`scheduled` for unsent campaigns due before the month ends. A campaign that would take "
    "`executed` past `quota` fails when it is due, sending nothing.",
)
async def email_quota(brand: uuid.UUID, caller: CurrentCaller, conn: ReadConnection) -> ORJSONResponse:
    return ok(await quota.quota(conn, caller.user.id, brand))
