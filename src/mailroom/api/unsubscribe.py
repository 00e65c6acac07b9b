"""One-click unsubscribe (RFC 8058): a link per recipient; a plain POST to it suppresses at once.

The token (see mailroom.links) carries the brand and the address encrypted and authenticated with a
key derived from the service secret, so the link needs no login and no cookie, cannot be forged for
another address, does not show the address, and works from the first send.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailroom.addresses import normalize
from mailroom.api.deps import Secrets, Session
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crypto import InvalidToken, SecretBox
from mailroom.errors import NotFound
from mailroom.links import read_unsubscribe_token
from mailroom.tracking.events import NewEvent, append_events
from mailroom.tracking.service import suppress

router = APIRouter(tags=["unsubscribe"], route_class=StrictQueryRoute)


def _read(box: SecretBox, token: str) -> tuple[uuid.UUID, str]:
    try:
        return read_unsubscribe_token(box, token)
    except InvalidToken:
        raise NotFound("no such unsubscribe link", field="token") from None


@router.post(
    "/unsubscribe/{token}",
    summary="One-click unsubscribe (List-Unsubscribe-Post)",
    # RFC 8058 asks only for a 2xx; mail clients post without reading an answer.
    response_class=Response,
    responses={200: {"description": "Unsubscribed; the answer has no body"}},
)
async def unsubscribe(token: str, session: Session, box: Secrets) -> Response:
    brand, address = _read(box, token)
    await suppress(session, brand, address)
    # The link names the brand and the address only (links already sent must keep working): no campaign.
    await append_events(
        session, [NewEvent(type="unsubscribed", source="unsubscribe", brand=brand, recipient=normalize(address))]
    )
    return Response(status_code=200)


@router.get("/unsubscribe/{token}", summary="The page an unsubscribe link opens", response_class=HTMLResponse)
async def unsubscribe_page(token: str, request: Request, box: Secrets) -> HTMLResponse:
    _read(box, token)  # 404 for a forged link
    # A GET must not unsubscribe (mail scanners follow links): the page asks for one click.
    return HTMLResponse(
        "<!doctype html><title>Unsubscribe</title><form method=post>"
        "<p>Stop receiving these emails?</p><button type=submit>Unsubscribe</button></form>"
    )
