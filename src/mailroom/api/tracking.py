"""Tracking hits and view in browser: public links opened from an email, their signed token their only authority.

``GET /t/o/<token>`` (the pixel) always answers a transparent GIF, never an error image a mail client
would show, and records an open when the token is ours. ``GET /t/c/<token>`` redirects to the link the
token's email held at that position (``emails.links``), never to anything the request says, and records
the click (see tracking.hits; answered by api/hot_paths.py before routing).

``GET /emails/view/<token>`` renders the campaign again for that recipient (the app's bounded renderer),
as long as the campaign is archived and not deleted. It is the user's html served from our origin, so
it goes out with a Content-Security-Policy that runs nothing and loads only images and inline styles.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailroom.api.deps import AppSettings, Session
from mailroom.api.hot_paths import NO_STORE, PIXEL, HotPaths, client_of
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crypto import InvalidToken, SecretBox
from mailroom.errors import NotFound
from mailroom.tracking.view import render_view
from mailroom.tracking_links import TrackingTokens

log = logging.getLogger(__name__)
router = APIRouter(tags=["tracking"], route_class=StrictQueryRoute)

VIEW_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; "
    "font-src * data:; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store, private",
}


def install(state: Any, box: SecretBox) -> None:
    """The token keys, derived once per app."""
    state.tracking_tokens = TrackingTokens(box)


def _tokens(request: Request) -> TrackingTokens:
    tokens: TrackingTokens = request.app.state.tracking_tokens
    return tokens


def _hot(request: Request) -> HotPaths:
    hot: HotPaths = request.app.state.hot_paths
    return hot


Tokens = Annotated[TrackingTokens, Depends(_tokens)]


# Both answered by api/hot_paths.py before routing reaches them; the routes document them and serve an
# app mounted without that shortcut.
@router.get("/t/o/{token}", summary="Tracking pixel: records an open", response_class=Response)
async def opened(token: str, request: Request) -> Response:
    await _hot(request).open_hit(token, *client_of(request.scope))
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get(
    "/t/c/{token}",
    summary="Tracked link: records a click and redirects to the email's own link",
    status_code=302,
    response_class=RedirectResponse,
)
async def clicked(token: str, request: Request) -> Response:
    url = await _hot(request).click_hit(token, *client_of(request.scope))
    if url is None:
        raise NotFound("no such link", field="token")
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get(
    "/emails/view/{token}",
    summary="An archived campaign's email as sent to one recipient",
    response_class=HTMLResponse,
)
async def view(token: str, request: Request, session: Session, tokens: Tokens, settings: AppSettings) -> Response:
    try:
        row_id, personal = tokens.read_view(token)
    except InvalidToken:
        raise NotFound("no such email", field="token") from None
    html_text = await render_view(session, request.app.state.renderer, tokens, settings.public_url, row_id, personal)
    return HTMLResponse(html_text, headers=VIEW_HEADERS)
