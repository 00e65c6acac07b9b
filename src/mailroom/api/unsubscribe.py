"""Unsubscribe links: one-click (RFC 8058) for mail clients, and a page in words for a person.

The token (see mailroom.links) carries the brand, the address and, in links sent since rows were named,
the recipient row, encrypted and authenticated with a key derived from the service secret: the link needs
no login and no cookie, cannot be forged for another address, and does not show the address.

A mail client's one-click POST (body ``List-Unsubscribe=One-Click``) gets an empty 200, as the RFC asks.
The page's own button posts ``page=1`` and gets a page saying what happened, with a button that undoes
it within UNDO_SECONDS: its form carries a sealed undo token, so the unsubscribe link alone (in a forwarded
mail, or followed by a scanner) can never subscribe anyone again.
"""

from __future__ import annotations

import hashlib
import html
import uuid
from datetime import datetime
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailroom.api.deps import Secrets, Session
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crypto import InvalidToken, SecretBox
from mailroom.errors import NotFound
from mailroom.links import read_unsubscribe_token
from mailroom.tracking.service import brand_name, undo_unsubscribe, unsubscribe

router = APIRouter(tags=["unsubscribe"], route_class=StrictQueryRoute)

UNDO_PURPOSE = "unsubscribe-undo"
UNDO_SECONDS = 15 * 60
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store, private",
    "X-Content-Type-Options": "nosniff",
}
_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#1f2328}"
    "button{font:inherit;padding:.5rem 1rem;border:1px solid #1f2328;border-radius:6px;background:#fff;"
    "color:#1f2328;cursor:pointer}"
)


def _read(box: SecretBox, token: str) -> tuple[uuid.UUID, str, uuid.UUID | None]:
    try:
        return read_unsubscribe_token(box, token)
    except InvalidToken:
        raise NotFound("no such unsubscribe link", field="token") from None


def _page(title: str, body: str) -> HTMLResponse:
    document = (
        f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style><main>{body}</main></html>"
    )
    return HTMLResponse(document, headers=PAGE_HEADERS)


def _from_whom(name: str | None) -> str:
    return f"from {html.escape(name)}" if name else "from this sender"


def _link_key(token: str) -> str:
    # The undo token names the link it undoes without carrying the link itself.
    return hashlib.sha256(token.encode()).hexdigest()[:32]


async def _form(request: Request) -> dict[str, list[str]]:
    # Bodies here are a few bytes (the request-size middleware bounds them): a form or the one-click line.
    return parse_qs((await request.body()).decode("utf-8", "replace"))


@router.post(
    "/unsubscribe/{token}",
    summary="Unsubscribe: one-click (List-Unsubscribe-Post), or the page's button",
    response_class=Response,
    responses={200: {"description": "Unsubscribed; empty for one-click, a page for the page's button"}},
)
async def unsubscribe_link(token: str, request: Request, session: Session, box: Secrets) -> Response:
    brand, address, recipient = _read(box, token)
    done = await unsubscribe(session, brand, address, recipient)
    if "page" not in await _form(request):
        return Response(status_code=200)  # RFC 8058 asks only for a 2xx; mail clients read no answer
    whom = _from_whom(await brand_name(session, brand))
    if done.suppressed_at is None:
        return _page("Unsubscribed", f"<h1>You are unsubscribed</h1><p>You receive no mail {whom}.</p>")
    payload = {"link": _link_key(token), "at": done.suppressed_at.isoformat(), "tagged": [str(t) for t in done.tagged]}
    undo = box.seal(UNDO_PURPOSE, payload, ttl=UNDO_SECONDS)
    return _page(
        "Unsubscribed",
        f"<h1>You are unsubscribed</h1><p>You will no longer receive mail {whom}.</p>"
        f"<form method=post action='{html.escape(token)}/undo'><input type=hidden name=undo value='{undo}'>"
        "<p>Did you mean to stay? <button type=submit>Undo</button></p></form>",
    )


@router.post(
    "/unsubscribe/{token}/undo",
    summary="Undo an unsubscribe from the page it answered, within 15 minutes",
    response_class=HTMLResponse,
)
async def undo_link(token: str, request: Request, session: Session, box: Secrets) -> Response:
    brand, address, _ = _read(box, token)
    try:
        sealed = ((await _form(request)).get("undo") or [""])[0]
        payload = box.unseal(UNDO_PURPOSE, sealed)
        if payload.get("link") != _link_key(token):
            raise InvalidToken("for another link")
        at = datetime.fromisoformat(str(payload["at"]))
        tagged = [uuid.UUID(str(t)) for t in payload.get("tagged", [])]
    except (InvalidToken, KeyError, ValueError, TypeError):
        raise NotFound("no unsubscribe to undo (the page's undo lasts 15 minutes)", field="undo") from None
    lifted = await undo_unsubscribe(session, brand, address, at, tagged)
    whom = _from_whom(await brand_name(session, brand))
    if not lifted:
        return _page("Unsubscribed", f"<h1>Still unsubscribed</h1><p>There was nothing left to undo {whom}.</p>")
    return _page("Subscribed again", f"<h1>You are subscribed again</h1><p>You will receive mail {whom} again.</p>")


@router.get("/unsubscribe/{token}", summary="The page an unsubscribe link opens", response_class=HTMLResponse)
async def unsubscribe_page(token: str, session: Session, box: Secrets) -> HTMLResponse:
    brand, _, _ = _read(box, token)  # 404 for a forged link
    whom = _from_whom(await brand_name(session, brand))
    # A GET must not unsubscribe (mail scanners follow links): the page asks for one click.
    return _page(
        "Unsubscribe",
        f"<h1>Unsubscribe</h1><form method=post><input type=hidden name=page value=1>"
        f"<p>Stop receiving mail {whom}?</p><button type=submit>Unsubscribe</button></form>",
    )
