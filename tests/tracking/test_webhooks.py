"""POST /emails/events: Mailgun's signed webhooks are appended as events; anything else changes nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.tracking.settle import purge_tokens
from tests.support.events import event, post_events, sent_campaign, signed, use_signing_key
from tests.support.world import World


@pytest.fixture(autouse=True)
def _signing_key(app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    use_signing_key(app, settings, monkeypatch)


async def stored(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(text("SELECT * FROM email_events ORDER BY id"))
    return [dict(r._mapping) for r in rows]


async def tokens(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM webhook_tokens"))).scalar_one())


async def test_a_signed_event_is_appended_for_its_email_and_recipient(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await sent_campaign(admin, app, settings, ["ann@example.com", "bob@example.com"])
    failed = event("failed", sent.message_id, "Bob@Example.com", severity="permanent", reason="bounce")
    failed["delivery-status"] = {"code": 550, "message": "5.1.1 No such user", "description": ""}
    call = signed(failed)
    answer = await post_events(world.client, call)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"code": "OK", "data": {"appended": 1}}
    (row,) = await stored(session)
    email_id = (
        await session.execute(
            text("SELECT email FROM email_campaign_emails WHERE campaign = :c AND email_address = 'bob@example.com'"),
            {"c": sent.id},
        )
    ).scalar_one()
    assert row["type"] == "failed" and row["severity"] == "permanent" and row["source"] == "mailgun"
    assert str(row["campaign"]) == sent.id and row["email"] == email_id and row["brand"] == admin.brand
    assert row["recipient"] == "bob@example.com" and row["reason"] == "5.1.1 No such user"
    assert row["provider_event_id"] == call["event-data"]["id"]
    assert abs(row["occurred_at"].timestamp() - call["event-data"]["timestamp"]) < 0.001
    assert row["campaign_email"] is not None
    queued = await session.execute(text("SELECT id, created_at FROM unsettled_events"))
    assert queued.all() == [(row["id"], row["created_at"])]  # waiting to be counted


async def test_a_message_id_stored_with_angle_brackets_is_found_too(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await sent_campaign(admin, app, settings, ["ann@example.com"])
    await session.execute(text("UPDATE emails SET esp_message_id = '<' || esp_message_id || '>' WHERE campaign = :c"),
                          {"c": sent.id})  # fmt: skip
    await session.commit()
    clicked = event("clicked", sent.message_id, "ann@example.com", url="https://example.com/house")
    assert (await post_events(world.client, signed(clicked))).status_code == 200
    (row,) = await stored(session)
    assert row["campaign_email"] is not None and row["url"] == "https://example.com/house"


async def test_forged_stale_and_replayed_calls_are_refused_and_store_nothing(
    world: World, session: AsyncSession
) -> None:
    data = event("opened", "20240101000000.1.1@mg.example.com", "ann@example.com")
    forged = signed(data, key="not-the-key")
    stale = signed(data, timestamp=time.time() - 16 * 60)
    future = signed(data, timestamp=time.time() + 16 * 60)
    unsigned = {"event-data": data}
    for call in (forged, stale, future, unsigned):
        answer = await post_events(world.client, call)
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "Unauthorized" and "signature" in answer.json()["message"]
    assert await stored(session) == [] and await tokens(session) == 0

    good = signed(data)
    assert (await post_events(world.client, good)).status_code == 200
    replayed = await post_events(world.client, good)
    assert replayed.status_code == 401 and "already used" in replayed.json()["message"]
    assert len(await stored(session)) == 1

    # A batch holding one forged call is refused whole.
    batch = await post_events(world.client, signed(data), signed(data, key="nope"))
    assert batch.status_code == 401
    assert len(await stored(session)) == 1 and await tokens(session) == 1


async def test_a_batch_is_appended_at_once_and_unknown_types_are_dropped(world: World, session: AsyncSession) -> None:
    mid = "20240101000000.2.2@mg.example.com"
    answer = await post_events(
        world.client,
        signed(event("delivered", mid, "a@example.com")),
        signed(event("opened", mid, "a@example.com")),
        signed(event("list_member_uploaded", mid, "a@example.com")),
    )
    assert answer.status_code == 200 and answer.json()["data"] == {"appended": 2}
    rows = await stored(session)
    # An event for a message this service never sent is kept, unattached.
    assert [r["type"] for r in rows] == ["delivered", "opened"] and all(r["email"] is None for r in rows)


async def test_one_call_of_a_type_not_kept_answers_none_appended(world: World, session: AsyncSession) -> None:
    # One call per request is answered before routing; its answer must say what the route's does.
    mid = "20240101000000.3.3@mg.example.com"
    answer = await post_events(world.client, signed(event("list_member_uploaded", mid, "a@example.com")))
    assert answer.status_code == 200 and answer.json() == {"code": "OK", "data": {"appended": 0}}
    assert await stored(session) == []


async def test_bad_bodies_are_refused_naming_the_field(world: World, session: AsyncSession) -> None:
    answer = await world.client.post(
        "/emails/events", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400 and "body" in answer.json()["message"]
    answer = await post_events(world.client, {"signature": signed({})["signature"], "event-data": "x"})
    assert answer.status_code == 400 and "event-data" in answer.json()["message"]
    big = await world.client.post("/emails/events", content=b"[" + b" " * 70_000 + b"]")
    assert big.status_code == 413
    assert await stored(session) == []


async def test_a_bad_call_is_refused_alone_while_calls_around_it_are_stored(
    world: World, session: AsyncSession
) -> None:
    mid = "20240101000000.3.3@mg.example.com"
    bad = event("delivered", mid, "a@example.com")
    bad["recipient"] = {"address": "a@example.com"}
    good = [signed(event("delivered", mid, f"r{i}@example.com")) for i in range(20)]
    # Posted at once, one call per request: they are written together, and the bad one must not fail the rest.
    answers = await asyncio.gather(*(post_events(world.client, c) for c in [*good[:10], signed(bad), *good[10:]]))
    refused = answers[10]
    assert refused.status_code == 400 and "event-data.recipient" in refused.json()["message"]
    assert all(a.status_code == 200 for i, a in enumerate(answers) if i != 10)
    assert sorted(r["recipient"] for r in await stored(session)) == sorted(f"r{i}@example.com" for i in range(20))
    assert await tokens(session) == 20  # the refused call's token was not taken: fixed, it can be posted again


async def test_without_a_signing_key_the_endpoint_is_not_there(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.state._state, "settings", settings)
    answer = await post_events(world.client, signed(event("opened", "x@mg.example.com", "a@example.com")))
    assert answer.status_code == 404
    assert await stored(session) == [] and await tokens(session) == 0


async def test_tokens_leave_after_half_an_hour(world: World, session: AsyncSession) -> None:
    assert (await post_events(world.client, signed(event("opened", "y@mg.example.com", "a@example.com")))).is_success
    old = "INSERT INTO webhook_tokens (token, created_at) VALUES ('old', now() - interval '31 min')"
    await session.execute(text(old))
    await purge_tokens(session)
    assert (await session.execute(text("SELECT count(*) FROM webhook_tokens WHERE token = 'old'"))).scalar() == 0
    assert await tokens(session) == 1


async def test_calls_are_stored_again_once_the_database_has_dropped_the_connections(
    world: World, session: AsyncSession
) -> None:
    mid = "20240101000000.4.4@mg.example.com"

    async def burst(prefix: str) -> None:
        calls = [signed(event("delivered", mid, f"{prefix}{i}@example.com")) for i in range(5)]
        answers = await asyncio.gather(*(post_events(world.client, c) for c in calls))
        assert [a.status_code for a in answers] == [200] * 5

    await burst("a")
    dropped = await session.execute(
        text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%webhook_tokens%'"
        )
    )
    assert dropped.scalar_one() >= 1  # the connection the calls were written on
    await session.commit()
    await burst("b")
    assert len(await stored(session)) == 10
