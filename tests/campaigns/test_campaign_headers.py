"""Campaign headers: only the threading keys of the API document, with values that stay one header line."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.world import Actor, World


def campaign(**overrides: Any) -> dict[str, Any]:
    return {
        "to": [{"recipient_type": "Email", "email": "jane@example.com"}],
        "subject": "Open house",
        "html": "<p>Sunday 2pm</p>",
        "due_at": "2031-05-01T15:00:00Z",
        **overrides,
    }


async def assert_refused(actor: Actor, session: AsyncSession, body: dict[str, Any], field: str) -> None:
    response = await actor.post("/emails", body)
    assert response.status_code == 400, response.text
    assert response.json() == {"code": "BadRequest", "message": response.json()["message"]}
    assert response.json()["message"].startswith(f"{field}:"), response.json()["message"]
    assert (await session.execute(text("SELECT count(*) FROM email_campaigns"))).scalar_one() == 0


@pytest.fixture
async def admin(world: World) -> Actor:
    return await world.brand_admin()


REFUSED: list[tuple[str, Any, str]] = [
    ("Bcc", {"Bcc": "spy@example.com"}, "headers.Bcc"),
    ("From", {"From": "ceo@bank.example"}, "headers.From"),
    ("Reply-To", {"Reply-To": "x@example.com"}, "headers.Reply-To"),
    ("any X- header", {"X-Mailer": "mine"}, "headers.X-Mailer"),
    ("a known key in another spelling", {"In-Reply-To": "<a@example.com>"}, "headers.In-Reply-To"),
    ("allowed and unknown together", {"thread_id": "t1", "Sender": "x@example.com"}, "headers.Sender"),
    ("CRLF injection", {"in_reply_to": "<a@example.com>\r\nBcc: spy@example.com"}, "headers.in_reply_to"),
    ("bare LF", {"thread_id": "t1\nBcc: spy@example.com"}, "headers.thread_id"),
    ("NUL", {"message_id": "AAMk\x00"}, "headers.message_id"),
    ("in_reply_to not a message id", {"in_reply_to": "just text"}, "headers.in_reply_to"),
    ("in_reply_to without brackets", {"in_reply_to": "a@example.com"}, "headers.in_reply_to"),
    ("message_id with spaces", {"message_id": "a b"}, "headers.message_id"),
    ("longer than a header line", {"thread_id": "t" * 999}, "headers.thread_id"),
    ("empty", {"thread_id": ""}, "headers.thread_id"),
    ("not a string", {"thread_id": 17}, "headers.thread_id"),
    ("not an object", ["thread_id"], "headers"),
]


@pytest.mark.parametrize(("case", "headers", "field"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_a_header_other_than_threading_is_refused(
    admin: Actor, session: AsyncSession, case: str, headers: Any, field: str
) -> None:
    await assert_refused(admin, session, campaign(headers=headers), field)


async def test_threading_headers_are_kept_as_sent(admin: Actor) -> None:
    headers = {
        "thread_id": "18c0a1b2c3d4e5f6",
        "in_reply_to": "<CAHd3xZ1+abc@mail.gmail.com>",
        "message_id": "AAMkAGI2THVSAAA=",
    }
    made = admin.data(await admin.post("/emails", campaign(headers=headers)))
    assert made["headers"] == headers
    got = admin.data(await admin.get(f"/emails/{made['id']}"))
    assert got["headers"] == headers
    outlook = {"message_id": "<BY5PR@namprd.prod.outlook.com>"}
    assert admin.data(await admin.post("/emails", campaign(headers=outlook)))["headers"] == outlook


async def test_an_update_with_a_refused_header_changes_nothing(admin: Actor, session: AsyncSession) -> None:
    made = admin.data(await admin.post("/emails", campaign(headers={"thread_id": "t1"})))
    response = await admin.put(f"/emails/{made['id']}", campaign(subject="Changed", headers={"Bcc": "x@example.com"}))
    assert response.status_code == 400
    assert response.json()["message"].startswith("headers.Bcc:")
    row = (
        await session.execute(text("SELECT subject, headers FROM email_campaigns WHERE id = :id"), {"id": made["id"]})
    ).one()
    assert (row.subject, row.headers) == ("Open house", {"thread_id": "t1"})
