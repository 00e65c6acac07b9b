"""Shared helpers for tests that create campaigns through the API and look at what was sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from tests.support.mailgun_server import FakeMailgun
from tests.support.smtp_server import FakeSmtpServer
from tests.support.world import Actor

TABLES = ("email_campaigns", "email_campaign_recipients", "email_campaign_attachments")


def due_now(seconds: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def received(server: FakeSmtpServer) -> list[str]:
    return sorted(rcpt.lower() for m in server.messages for rcpt in m.rcpt_tos)


async def schedule(actor: Actor, path: str = "/emails", **body: Any) -> dict[str, Any]:
    payload = {"subject": "News", "html": "<p>Hello</p>", "due_at": due_now(), **body}
    return actor.data(await actor.post(path, payload))


def campaign(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "to": [{"recipient_type": "Email", "email": "jane@example.com"}],
        "subject": "Open house",
        "html": "<p>Sunday 2pm</p>",
        "due_at": "2031-05-01T15:00:00Z",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


async def row_counts(session: AsyncSession) -> dict[str, int]:
    return {t: (await session.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one() for t in TABLES}


async def assert_refused(
    actor: Actor, session: AsyncSession, body: Any, field: str, *, status: int = 400, path: str = "/emails"
) -> None:
    before = await row_counts(session)
    if isinstance(body, bytes):
        response = await actor.client.post(
            path, content=body, headers={**actor.headers, "Content-Type": "application/json"}
        )
    else:
        response = await actor.post(path, body)
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"code", "message"}
    assert field in answer["message"], answer["message"]
    assert await row_counts(session) == before


def mailgun(settings: Settings, fake: FakeMailgun) -> dict[str, object]:
    return {"transport": "mailgun", "mailgun_api_url": fake.url, "mailgun_api_key": "key-test",
            "mailgun_domain": "mg.example.com"}  # fmt: skip
