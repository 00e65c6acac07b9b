"""POST /emails/events against hostile calls: text PostgreSQL cannot store, a call the database refuses
among concurrent ones, timestamps that are not numbers, and signatures computed as Mailgun documents them.

Calls are posted as raw JSON with ASCII escapes, so a lone surrogate travels as the escape ``\\ud800``
that JSON allows and an attacker can send.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.tracking.webhooks import sign
from tests.support.events import SIGNING_KEY, event, signed, stored_events, taken_tokens, use_signing_key

MID = "20240101000000.9.9@mg.example.com"
NUL, LONE_SURROGATE = "\x00", "\ud800"


@pytest.fixture(autouse=True)
def _signing_key(app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    use_signing_key(app, settings, monkeypatch)


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    raw = json.dumps(body).encode()  # ensure_ascii: a lone surrogate goes as its escape
    return await client.post("/emails/events", content=raw, headers={"content-type": "application/json"})


def poisoned(field: str, bad: str) -> dict[str, Any]:
    """A signed call whose ``field`` (dotted, as a refusal names it) holds ``bad``; the event's kind keeps it."""
    data = event("clicked" if field == "event-data.url" else "failed", MID, "ann@example.com",
                 url="https://example.com/", severity="permanent")  # fmt: skip
    if field == "event-data.reason":
        data["reason"] = "bounce"
    else:
        data["delivery-status"] = {"code": 550, "message": "5.1.1 No such user", "description": "gone"}
    call = signed(data)
    *parents, last = field.split(".")
    target = call
    for name in parents:
        target = target[name]
    target[last] = f"x{bad}{target.get(last, '')}"
    if field in ("signature.timestamp", "signature.token"):
        part = call["signature"]
        # Text with a lone surrogate has no UTF-8 bytes to sign; it is refused before any signature is read.
        with suppress(UnicodeEncodeError):
            part["signature"] = sign(SIGNING_KEY, part["timestamp"], part["token"])
    return call


STORED_FIELDS = (
    "event-data.recipient",
    "event-data.message.headers.message-id",
    "event-data.url",
    "event-data.client-info.user-agent",
    "event-data.ip",
    "event-data.id",
    "event-data.delivery-status.message",
    "event-data.delivery-status.description",
    "event-data.reason",
    "signature.token",
    "signature.timestamp",
    "signature.signature",
)


@pytest.mark.parametrize("bad", [NUL, LONE_SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("field", STORED_FIELDS)
async def test_text_postgresql_cannot_store_is_refused_naming_its_field(
    client: httpx.AsyncClient, session: AsyncSession, field: str, bad: str
) -> None:
    answer = await post(client, poisoned(field, bad))
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "BadRequest" and answer.json()["message"].startswith(f"{field}: "), answer.text
    assert await stored_events(session) == [] and await taken_tokens(session) == 0


async def test_a_poisoned_call_in_a_list_refuses_the_list_naming_its_field(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    good = signed(event("delivered", MID, "ann@example.com"))
    answer = await post(client, [good, poisoned("event-data.recipient", NUL)])
    assert answer.status_code == 400 and answer.json()["message"].startswith("event-data.recipient: "), answer.text
    assert await stored_events(session) == [] and await taken_tokens(session) == 0


async def test_text_in_a_field_that_is_not_kept_does_not_refuse_the_call(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    # Only what is stored must be storable: the rest of Mailgun's event is read for nothing.
    for bad in (NUL, LONE_SURROGATE):
        data = event("delivered", MID, "ann@example.com")
        data["user-variables"] = {"note": f"a{bad}b"}
        answer = await post(client, signed(data))
        assert answer.status_code == 200, answer.text
    assert len(await stored_events(session)) == 2


async def test_poisoned_calls_among_concurrent_ones_fail_alone(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    good = [signed(event("delivered", MID, f"r{i}@example.com")) for i in range(27)]
    bad = {
        5: poisoned("event-data.recipient", NUL),
        14: poisoned("event-data.client-info.user-agent", NUL),
        23: poisoned("signature.token", NUL),
    }
    calls = list(good)
    for at, call in sorted(bad.items()):
        calls.insert(at, call)
    # Posted at once, one call per request: written together, so one unstorable call would fail the batch.
    answers = await asyncio.gather(*(post(client, c) for c in calls))
    for at, field in zip(sorted(bad), ("event-data.recipient", "event-data.client-info.user-agent", "signature.token"),
                         strict=True):  # fmt: skip
        assert answers[at].status_code == 400 and answers[at].json()["message"].startswith(f"{field}: ")
    assert [a.status_code for i, a in enumerate(answers) if i not in bad] == [200] * 27
    stored = sorted(r["recipient"] for r in await stored_events(session))
    assert stored == sorted(f"r{i}@example.com" for i in range(27)) and await taken_tokens(session) == 27


@asynccontextmanager
async def refused_by_the_database(session: AsyncSession, event_id: str) -> AsyncIterator[None]:
    """The events table refuses an event with this id, as it would refuse data no validation foresaw."""
    assert event_id.isalnum()  # spelled into the statement: DDL takes no parameters
    check = f"CHECK (provider_event_id IS DISTINCT FROM '{event_id}')"
    await session.execute(text(f"ALTER TABLE email_events ADD CONSTRAINT test_refused {check}"))
    await session.commit()
    try:
        yield
    finally:
        await session.rollback()
        await session.execute(text("ALTER TABLE email_events DROP CONSTRAINT test_refused"))
        await session.commit()


async def test_a_call_the_database_refuses_fails_alone_and_its_batch_is_stored(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    refused_id = "refused" + secrets.token_hex(8)
    calls = [signed(event("delivered", MID, f"r{i}@example.com")) for i in range(30)]
    bad = (4, 15, 26)
    for at in bad:
        calls[at]["event-data"]["id"] = refused_id
    async with refused_by_the_database(session, refused_id):
        answers = await asyncio.gather(*(post(client, c) for c in calls))
        for at in bad:
            assert answers[at].status_code == 400, answers[at].text
            assert answers[at].json()["message"].startswith("event-data: ")
        assert [a.status_code for i, a in enumerate(answers) if i not in bad] == [200] * 27
        stored = sorted(r["recipient"] for r in await stored_events(session))
        assert stored == sorted(f"r{i}@example.com" for i in range(30) if i not in bad)
        assert await taken_tokens(session) == 27

        # Several calls in one body are one transaction: refused whole.
        listed = await post(client, [signed(event("delivered", MID, "s@example.com")), calls[4]])
        assert listed.status_code == 400 and listed.json()["message"].startswith("event-data: "), listed.text
        assert len(await stored_events(session)) == 27 and await taken_tokens(session) == 27

    # Their tokens were not taken: once the database takes them, Mailgun's retries are stored.
    assert [(await post(client, calls[at])).status_code for at in bad] == [200] * 3
    assert len(await stored_events(session)) == 30


async def test_a_database_failing_a_call_answers_503_not_400(client: httpx.AsyncClient, session: AsyncSession) -> None:
    failing_id = "failing" + secrets.token_hex(8)
    await session.execute(
        text(
            "CREATE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.provider_event_id = '{failing_id}' THEN RAISE EXCEPTION 'no space' USING ERRCODE = 'disk_full';"
            " END IF; RETURN NEW; END $$"
        )
    )
    await session.execute(
        text(
            "CREATE TRIGGER test_disk_full BEFORE INSERT ON email_events FOR EACH ROW EXECUTE FUNCTION test_disk_full()"
        )
    )
    await session.commit()
    try:
        call = signed(event("delivered", MID, "ann@example.com", id=failing_id))
        answer = await post(client, call)
        assert answer.status_code == 503, answer.text
        assert await stored_events(session) == [] and await taken_tokens(session) == 0
    finally:
        await session.rollback()
        await session.execute(text("DROP TRIGGER test_disk_full ON email_events"))
        await session.execute(text("DROP FUNCTION test_disk_full()"))
        await session.commit()


def signed_at(data: dict[str, Any], timestamp: str) -> dict[str, Any]:
    token = secrets.token_hex(25)
    return {"signature": {"timestamp": timestamp, "token": token, "signature": sign(SIGNING_KEY, timestamp, token)},
            "event-data": data}  # fmt: skip


@pytest.mark.parametrize("timestamp", ["nan", "NaN", "-nan", "inf", "-inf", "infinity", "1e999"])
async def test_a_timestamp_that_is_not_a_finite_number_is_refused(
    client: httpx.AsyncClient, session: AsyncSession, timestamp: str
) -> None:
    answer = await post(client, signed_at(event("delivered", MID, "ann@example.com"), timestamp))
    assert answer.status_code == 401, answer.text
    assert answer.json()["message"].startswith("signature.timestamp: ")
    assert await stored_events(session) == [] and await taken_tokens(session) == 0


async def test_a_signature_made_as_mailgun_documents_it_is_accepted_and_one_changed_digit_is_not(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    # Mailgun: hex HMAC-SHA256 keyed with the webhook signing key, over timestamp followed by token.
    signature = hmac.new(SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    changed = signature[:7] + ("0" if signature[7] != "0" else "1") + signature[8:]
    data = event("delivered", MID, "ann@example.com")

    # The changed one first: once the genuine call took the token, any repeat is refused as replayed.
    forged = await post(client, {"signature": {"timestamp": timestamp, "token": token, "signature": changed},
                                 "event-data": data})  # fmt: skip
    assert forged.status_code == 401, forged.text
    assert forged.json()["message"] == "signature.signature: does not match"
    assert await stored_events(session) == [] and await taken_tokens(session) == 0

    genuine = await post(client, {"signature": {"timestamp": timestamp, "token": token, "signature": signature},
                                  "event-data": data})  # fmt: skip
    assert genuine.status_code == 200, genuine.text
    (row,) = await stored_events(session)
    assert row["provider_event_id"] == data["id"] and row["recipient"] == "ann@example.com"
