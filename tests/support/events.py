"""Mailgun event webhooks as Mailgun signs them, a campaign really sent through the Mailgun fake, and
settling what was posted."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.config import Settings
from mailroom.event_types import EVENT_TYPES
from mailroom.tracking.settle import settle_once
from mailroom.tracking.webhooks import sign
from tests.support.campaigns import mailgun, schedule
from tests.support.mailgun_server import mailgun_server
from tests.support.sender import running_worker, wait_until_sent
from tests.support.world import Actor

SIGNING_KEY = "key-webhook-signing-test"
# Every event type is a counter column, on campaigns, campaign emails and emails alike.
COUNTERS = EVENT_TYPES


def use_signing_key(app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The running app verifies webhooks with SIGNING_KEY for the rest of the test."""
    update = {"mailgun_webhook_signing_key": SIGNING_KEY}
    monkeypatch.setitem(app.state._state, "settings", settings.model_copy(update=update))


def signed(
    data: dict[str, Any], *, key: str = SIGNING_KEY, timestamp: float | None = None, token: str | None = None
) -> dict[str, Any]:
    """One webhook call as Mailgun posts it: the signature block beside the event data."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    token = token or secrets.token_hex(25)
    return {"signature": {"timestamp": stamp, "token": token, "signature": sign(key, stamp, token)}, "event-data": data}


DESKTOP = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15"


def event(
    kind: str, message_id: str, recipient: str, *, after: float = 120.0, user_agent: str = DESKTOP, **fields: Any
) -> dict[str, Any]:
    """Mailgun's event-data; it happened ``after`` seconds from now (past the 30 s after sending by default)."""
    return {
        "id": secrets.token_urlsafe(16),
        "event": kind,
        "timestamp": time.time() + after,
        "recipient": recipient,
        "message": {"headers": {"message-id": message_id}},
        "client-info": {"user-agent": user_agent},
        **fields,
    }


@dataclass
class SentCampaign:
    id: str
    message_id: str  # as Mailgun's events name it: without angle brackets
    recipients: list[str]


async def sent_campaign(
    actor: Actor, app: FastAPI, settings: Settings, recipients: list[str], **body: Any
) -> SentCampaign:
    """An individual campaign to these addresses, sent by a real worker through the Mailgun fake."""
    made = await schedule(
        actor, path="/emails/individual", to=[{"recipient_type": "Email", "email": r} for r in recipients], **body
    )
    with mailgun_server() as fake:
        async with running_worker(settings, **mailgun(settings, fake)):
            await wait_until_sent(app.state.sessionmaker, made["id"])
    async with app.state.sessionmaker() as s:
        ids = await s.execute(text("SELECT DISTINCT esp_message_id FROM emails WHERE campaign = :c"), {"c": made["id"]})
        (message_id,) = ids.scalars().all()
    return SentCampaign(id=made["id"], message_id=message_id.strip("<>"), recipients=recipients)


async def post_events(client: httpx.AsyncClient, *calls: dict[str, Any]) -> httpx.Response:
    body: Any = calls[0] if len(calls) == 1 else list(calls)
    return await client.post("/emails/events", json=body)


async def stored_events(session: AsyncSession) -> list[dict[str, Any]]:
    """Every stored event, oldest first."""
    rows = await session.execute(text("SELECT * FROM email_events ORDER BY id"))
    return [dict(r._mapping) for r in rows]


async def taken_tokens(session: AsyncSession) -> int:
    """How many webhook signature tokens have been taken (a taken one refuses its call as replayed)."""
    return int((await session.execute(text("SELECT count(*) FROM webhook_tokens"))).scalar_one())


async def settle_all(sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 20000) -> int:
    """Settle until nothing is left, one transaction per batch, as the settler loop does."""
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            claimed = await settle_once(session, limit=limit)
        if not claimed:
            return total
        total += claimed


async def counters(session: AsyncSession, campaign: str) -> dict[str, dict[str, Any]]:
    """Every counter level of a campaign: the campaign row, each recipient row, and each email's raw numbers."""
    cols = ", ".join(COUNTERS)
    row = (await session.execute(text(f"SELECT {cols} FROM email_campaigns WHERE id = :c"), {"c": campaign})).one()
    people = await session.execute(
        text(f"SELECT email_address, uncounted, {cols} FROM email_campaign_emails WHERE campaign = :c"), {"c": campaign}
    )
    raw = await session.execute(
        text(
            f"SELECT ce.email_address, {', '.join('m.' + c for c in COUNTERS)} FROM emails m "
            "JOIN email_campaign_emails ce ON ce.email = m.id WHERE ce.campaign = :c"
        ),
        {"c": campaign},
    )
    return {
        "campaign": dict(row._mapping),
        "recipients": {r.email_address: dict(r._mapping) for r in people},
        "emails": {r.email_address: dict(r._mapping) for r in raw},
    }


def new_id() -> str:
    return str(uuid.uuid4())
