"""The workspace's account page: the browsers signed in as the user, and the user's API tokens.

Each session can be ended from here (a lost laptop), and API tokens made, named, given an expiry and
revoked, through the same rules as `/users/self/tokens`: a new token is shown once, on the answer to the
form that made it, and never in a URL; a revoked one stops working in every process within a second.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from mailroom.api.deps import Session
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crm import tokens
from mailroom.crm.schemas import TokenIn
from mailroom.crm.tokens import MAX_TOKEN_DAYS
from mailroom.errors import NotFound
from mailroom.web import sign_in
from mailroom.web.guard import SESSION_COOKIE, csrf_anchor
from mailroom.web.pages import SIGN_IN_PAGE, App, form_with_csrf, not_found, redirect, refused, signed_in, user_row
from mailroom.web.render import render

ACCOUNT_PAGE = "/app/account"

router = APIRouter(prefix="/app", include_in_schema=False, route_class=StrictQueryRoute)


async def _page(
    request: Request, app: App, session: Session, user: uuid.UUID, *, status: int = 200, **context: Any
) -> Response:
    current = request.cookies.get(SESSION_COOKIE)
    # What only some answers show: a new token, or what was wrong with the form and what it held.
    for name in ("new_token", "new_token_name", "error", "form"):
        context.setdefault(name, None)
    return render(
        "account.html",
        app.box,
        csrf_anchor(request),
        status=status,
        user=await user_row(session, user),
        sessions=await sign_in.user_sessions(session, user),
        this_session=sign_in.session_handle(current) if current else "",
        tokens=await tokens.list_tokens(session, user=user),
        max_days=MAX_TOKEN_DAYS,
        idle_days=sign_in.IDLE_DAYS,
        **context,
    )


@router.get("/account")
async def account(request: Request, app: App, session: Session) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    return await _page(request, app, session, user)


@router.post("/account/sessions/end")
async def end_session(request: Request, app: App, session: Session) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    fields = await form_with_csrf(request, app)
    if fields is None:
        return refused(request, app)
    if not await sign_in.end_user_session(session, user, fields.get("session", "")):
        return not_found(request, app, user=await user_row(session, user))
    return redirect(ACCOUNT_PAGE)


def _token_request(fields: dict[str, Any]) -> TokenIn | str:
    """The form as the API's own request body, or what is wrong with it, naming the field."""
    name = fields.get("name", "").strip() or None
    days = fields.get("expires_in_days", "").strip()
    try:
        return TokenIn(name=name, expires_in_days=int(days) if days else None)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            error = exc.errors()[0]
            return f"{'.'.join(str(part) for part in error['loc']) or 'form'}: {error['msg']}"
        return "expires_in_days: must be a whole number of days"


@router.post("/account/tokens")
async def create_token(request: Request, app: App, session: Session) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    fields = await form_with_csrf(request, app)
    if fields is None:
        return refused(request, app)
    body = _token_request(fields)
    if isinstance(body, str):
        return await _page(request, app, session, user, status=400, error=body, form=fields)
    row, token = await tokens.issue_token(session, user=user, name=body.name, expires_at=body.expiry())
    # Shown on this answer only: a redirect would have to carry it in a URL or keep it somewhere.
    return await _page(request, app, session, user, new_token=token, new_token_name=row.name)


@router.post("/account/tokens/{token_id}/revoke")
async def revoke_token(request: Request, app: App, session: Session, token_id: uuid.UUID) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    if await form_with_csrf(request, app) is None:
        return refused(request, app)
    try:
        await tokens.revoke_token(session, token_id=token_id, user=user)
    except NotFound:
        return not_found(request, app, user=await user_row(session, user))
    request.app.state.token_check.forget(token_id)
    return redirect(ACCOUNT_PAGE)
