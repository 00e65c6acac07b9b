"""Tracking hits and view in browser: public links opened from an email, their signed token their only authority.

``GET /t/o/<token>`` (the pixel) always answers a transparent GIF, never an error image a mail client
would show, and records an open when the token is ours. ``GET /t/c/<token>`` redirects to the link the
token's email held at that position (``emails.links``), never to anything the request says, and records
the click. Each hit is one INSERT ... SELECT in autocommit: one round trip, no ORM objects.

A shared message (one emails row for many recipients) cannot tell who opened or clicked: its events
name the email and campaign, and carry ``campaign_email`` and ``recipient`` only when the email has
exactly one recipient row (individual sends).

``GET /emails/view/<token>`` renders the campaign again for that recipient (the app's bounded renderer),
as long as the campaign is archived and not deleted. It is the user's html served from our origin, so
it goes out with a Content-Security-Policy that runs nothing and loads only images and inline styles.
"""

from __future__ import annotations

import base64
import html
import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from mailroom.api.deps import AppSettings, Session
from mailroom.crypto import InvalidToken, SecretBox
from mailroom.errors import NotFound
from mailroom.sending.renderer import CampaignTemplates, RenderPool
from mailroom.sending.to_send import PendingRow, load_campaign
from mailroom.sending.tracking_links import TrackingTokens, view_url

log = logging.getLogger(__name__)
router = APIRouter(tags=["tracking"])

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")  # 43 bytes, transparent
_NO_STORE = {"Cache-Control": "no-store, private", "Pragma": "no-cache"}
VIEW_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; "
    "font-src * data:; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store, private",
}
MAX_USER_AGENT = 500

# The recipient row of an email when it has exactly one (individual sends); for a shared message, none.
_HIT = """
    INSERT INTO email_events (type, source, brand, campaign, email, campaign_email, recipient, url, link_index,
                              user_agent, ip)
    SELECT :type, :source, c.brand, e.campaign, e.id, r.id, r.address, {url}, {index}, :user_agent, :ip
    FROM emails e
    LEFT JOIN email_campaigns c ON c.id = e.campaign
    LEFT JOIN LATERAL (
        SELECT CASE WHEN count(*) = 1 THEN (array_agg(x.id))[1] END AS id,
               CASE WHEN count(*) = 1 THEN (array_agg(x.email_address))[1] END AS address
        FROM (SELECT id, email_address FROM email_campaign_emails WHERE email = e.id LIMIT 2) x
    ) r ON true
    WHERE e.id = :email {where}
    RETURNING url
"""
OPENED = text(_HIT.format(url="NULL", index="NULL", where=""))
CLICKED = text(
    _HIT.format(
        url="e.links[:position]",
        index="CAST(:index AS integer)",
        where="AND e.links[:position] IS NOT NULL",
    )
)

VIEWED = text(
    """
    SELECT r.id, r.campaign, r.email_address, r.send_type, ct.first_name, ct.last_name, a.full_name
    FROM email_campaign_emails r
    JOIN email_campaigns c ON c.id = r.campaign
    LEFT JOIN contacts ct ON ct.id = r.contact
    LEFT JOIN agents a ON a.id = r.agent
    WHERE r.id = :id AND c.archive AND c.deleted_at IS NULL
    """
)


def install(state: Any, box: SecretBox, engine: AsyncEngine) -> None:
    """What the routes share, made once per app: the token keys, and the engine hits write through.

    Autocommit: a hit is one statement, so no BEGIN and COMMIT round trips around it.
    """
    state.tracking_tokens = TrackingTokens(box)
    # Its own small pool, without a ping before each use: a hit is one statement, and a dead connection
    # fails it (the pixel still answers; the click is retried by the person clicking).
    state.tracking_engine = create_async_engine(
        engine.url, pool_size=8, max_overflow=8, pool_pre_ping=False, isolation_level="AUTOCOMMIT"
    )


def _tokens(request: Request) -> TrackingTokens:
    tokens: TrackingTokens = request.app.state.tracking_tokens
    return tokens


def _autocommit(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.tracking_engine
    return engine


Tokens = Annotated[TrackingTokens, Depends(_tokens)]


def _client(request: Request) -> dict[str, str | None]:
    agent = request.headers.get("user-agent")
    return {
        "user_agent": agent[:MAX_USER_AGENT] if agent else None,
        "ip": request.client.host if request.client else None,
    }


@router.get("/t/o/{token}", summary="Tracking pixel: records an open", response_class=Response)
async def opened(token: str, request: Request, tokens: Tokens) -> Response:
    try:
        email = tokens.read_open(token)
    except InvalidToken:
        email = None
    if email is not None:
        try:
            async with _autocommit(request).connect() as conn:
                await conn.execute(OPENED, {"type": "opened", "source": "pixel", "email": email, **_client(request)})
        except DBAPIError:
            # The image must still show as nothing; an open lost to an outage is not worth a broken image.
            log.warning("could not record an open of email %s", email, exc_info=True)
    return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)


@router.get(
    "/t/c/{token}",
    summary="Tracked link: records a click and redirects to the email's own link",
    status_code=302,
    response_class=RedirectResponse,
)
async def clicked(token: str, request: Request, tokens: Tokens) -> Response:
    try:
        email, index = tokens.read_click(token)
    except InvalidToken:
        raise NotFound("no such link", field="token") from None
    params = {"type": "clicked", "source": "click", "email": email, "index": index, "position": index + 1}
    async with _autocommit(request).connect() as conn:
        url = (await conn.execute(CLICKED, {**params, **_client(request)})).scalar_one_or_none()
    if url is None:
        raise NotFound("no such link", field="token")
    return RedirectResponse(url, status_code=302, headers=_NO_STORE)


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


async def render_view(
    session: AsyncSession, renderer: RenderPool, tokens: TrackingTokens, public_url: str, row_id: uuid.UUID,
    personal: bool,
) -> str:  # fmt: skip
    """The email's html rendered again from its campaign; NotFound unless archived and not deleted."""
    row = (await session.execute(VIEWED, {"id": row_id})).first()
    campaign = None if row is None else await load_campaign(session, row.campaign)
    if row is None or campaign is None or campaign.deleted:
        raise NotFound("no such email", field="token")
    recipient = PendingRow(row.id, row.email_address, row.send_type, row.first_name, row.last_name, row.full_name)
    context = {
        "recipient": recipient.template_values() if personal else {},
        "sender": campaign.sender.template_values(),
        "email": {"url": view_url(public_url, tokens, row.id, personal=personal)},
    }
    (message,) = await renderer.render(CampaignTemplates(campaign.subject, campaign.html, campaign.text), [context])
    if message.html is not None:
        return message.html
    return f"<!doctype html><meta charset=utf-8><pre>{html.escape(message.text)}</pre>"
