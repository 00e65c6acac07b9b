"""The workspace's mailboxes: the user's Gmail and Outlook accounts connected for a brand, to send through.

Connecting goes through the bound consent flow (crm.oauth): the link here asks for a consent URL for the
signed-in user and sends the browser to the provider, which sends it back to the callback; that callback
stores the mailbox only for the browser signed in as the same user. The link is a plain navigation, not a
form: the page's CSP (form-action 'self') would stop a form's redirect to the provider, and following it
only starts a consent the user must still approve with their own account.
"""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailroom.api.deps import Session
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crm import credentials, oauth
from mailroom.crm.membership import member_role, user_brands
from mailroom.errors import BadRequest, NotFound
from mailroom.transports.oauth import LABELS
from mailroom.web.guard import csrf_anchor
from mailroom.web.pages import (
    SIGN_IN_PAGE,
    App,
    brand_name,
    form_with_csrf,
    not_found,
    redirect,
    refused,
    signed_in,
    user_row,
)
from mailroom.web.render import render

Provider = Literal["google", "microsoft"]
# What a connected mailbox is used for here: sending campaigns as the user.
SCOPES = ("mail.send",)

router = APIRouter(prefix="/app", include_in_schema=False, route_class=StrictQueryRoute)


async def _page(
    request: Request,
    app: App,
    session: Session,
    user: uuid.UUID,
    brand: uuid.UUID,
    *,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    brands = await user_brands(session, user)
    return render(
        "mailboxes.html",
        app.box,
        csrf_anchor(request),
        status=400 if error else 200,
        user=await user_row(session, user),
        brand=brand,
        brand_name=brand_name(brands, brand),
        mailboxes=await credentials.user_credentials(session, user=user, brand=brand),
        labels=LABELS,
        error=error,
        notice=notice,
    )


@router.get("/brands/{brand}/mailboxes")
async def mailboxes(
    request: Request,
    app: App,
    session: Session,
    brand: uuid.UUID,
    connected: Provider | None = None,
    declined: Provider | None = None,
) -> Response:
    """The page; ``connected`` or ``declined`` when the browser comes back from a provider's consent screen."""
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    if await member_role(session, user, brand) is None:
        return not_found(request, app, user=await user_row(session, user))
    notice = f"Your {LABELS[connected]} mailbox is connected." if connected else None
    error = f"{LABELS[declined]} did not connect the mailbox: nothing was stored." if declined else None
    return await _page(request, app, session, user, brand, notice=notice, error=error)


@router.get("/brands/{brand}/mailboxes/connect/{kind}")
async def connect(request: Request, app: App, session: Session, brand: uuid.UUID, kind: Provider) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    if await member_role(session, user, brand) is None:
        return not_found(request, app, user=await user_row(session, user))
    try:
        url = await oauth.start_connect(
            session, app.box, app.settings, user=user, brand=brand, kind=kind, scopes=SCOPES, from_workspace=True
        )
    except BadRequest as exc:  # the provider's client is not configured on this service
        return await _page(request, app, session, user, brand, error=exc.message)
    return redirect(url)


@router.post("/brands/{brand}/mailboxes/{kind}/{credential}/disconnect")
async def disconnect(
    request: Request,
    app: App,
    session: Session,
    brand: uuid.UUID,
    kind: Provider,
    credential: uuid.UUID,
) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    if await form_with_csrf(request, app) is None:
        return refused(request, app)
    try:
        await credentials.delete_credential(session, kind=kind, user=user, credential_id=credential)
    except NotFound:
        return not_found(request, app, user=await user_row(session, user))
    return redirect(f"/app/brands/{brand}/mailboxes")
