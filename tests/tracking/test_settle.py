"""Settling events into counters: raw per email, distinct per recipient and campaign, exact under concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from datetime import date
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.cli import work_and_settle
from mailroom.config import Settings
from mailroom.tracking.settle import ensure_partitions, run_settler
from tests.support.events import (
    COUNTERS,
    counters,
    event,
    post_events,
    sent_campaign,
    settle_all,
    signed,
    use_signing_key,
)
from tests.support.world import World


@pytest.fixture(autouse=True)
def _signing_key(app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    use_signing_key(app, settings, monkeypatch)


def zeros(**values: int) -> dict[str, int]:
    return {c: values.get(c, 0) for c in COUNTERS}


def only_counters(row: dict[str, Any]) -> dict[str, int]:
    return {c: row[c] for c in COUNTERS}


async def post_ok(world: World, *calls: dict[str, Any]) -> None:
    answer = await post_events(world.client, *calls)
    assert answer.status_code == 200, answer.text


async def test_each_event_type_moves_every_counter_level(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await sent_campaign(admin, app, settings, ["ann@example.com", "bob@example.com", "cy@example.com"])
    mid = sent.message_id
    url = "https://example.com/listing"
    await post_ok(
        world,
        *[signed(event(t, mid, "ann@example.com")) for t in ("accepted", "delivered", "delivered", "stored")],
        *[signed(event("opened", mid, "ann@example.com")) for _ in range(3)],
        *[signed(event("clicked", mid, "ann@example.com", url=url)) for _ in range(2)],
        signed(event("delivered", mid, "bob@example.com")),
        signed(event("opened", mid, "BOB@example.com")),
        signed(event("rejected", mid, "cy@example.com")),
        signed(event("failed", mid, "cy@example.com", severity="temporary")),
        signed(event("complained", mid, "cy@example.com")),
        signed(event("unsubscribed", mid, "cy@example.com")),
    )
    assert await settle_all(app.state.sessionmaker) == 15
    got = await counters(session, sent.id)
    # Raw numbers on each email: every event counts, but accepted stays the one acceptance of the send.
    assert only_counters(got["emails"]["ann@example.com"]) == zeros(accepted=1, delivered=2, stored=1, opened=3,
                                                                    clicked=2)  # fmt: skip
    assert only_counters(got["emails"]["bob@example.com"]) == zeros(accepted=1, delivered=1, opened=1)
    assert only_counters(got["emails"]["cy@example.com"]) == zeros(accepted=1, rejected=1, failed=1, complained=1,
                                                                   unsubscribed=1)  # fmt: skip
    # Distinct recipients on each recipient row and on the campaign.
    assert only_counters(got["recipients"]["ann@example.com"]) == zeros(accepted=1, delivered=1, stored=1, opened=1,
                                                                        clicked=1)  # fmt: skip
    assert only_counters(got["recipients"]["bob@example.com"]) == zeros(accepted=1, delivered=1, opened=1)
    assert only_counters(got["recipients"]["cy@example.com"]) == zeros(accepted=1, rejected=1, failed=1, complained=1,
                                                                       unsubscribed=1)  # fmt: skip
    assert only_counters(got["campaign"]) == zeros(accepted=3, delivered=2, stored=1, opened=2, clicked=1, rejected=1,
                                                   failed=1, complained=1, unsubscribed=1)  # fmt: skip

    # The same people again later count no one twice.
    await post_ok(
        world, signed(event("opened", mid, "ann@example.com")), signed(event("accepted", mid, "bob@example.com"))
    )
    await settle_all(app.state.sessionmaker)
    again = await counters(session, sent.id)
    assert again["campaign"] == got["campaign"]
    assert again["emails"]["ann@example.com"]["opened"] == 4


async def test_opens_and_clicks_that_are_no_ones_are_kept_but_not_counted(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    people = ["echo@example.com", "gmail@example.com", "apple@example.com", "scanned@example.com", "reader@example.com"]
    sent = await sent_campaign(admin, app, settings, people)
    links = ["https://example.com/a", "https://example.com/b", "https://example.com/a"]
    # What the send recorded for own tracking: the html's links in order.
    await session.execute(text("UPDATE emails SET links = :links WHERE campaign = :c"), {"links": links, "c": sent.id})
    await session.commit()
    mid = sent.message_id
    gmail = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    calls = [
        signed(event("opened", mid, "echo@example.com", after=5)),
        signed(event("clicked", mid, "echo@example.com", after=5, url=links[0])),
        signed(event("opened", mid, "gmail@example.com", user_agent=gmail)),
        signed(event("opened", mid, "apple@example.com", user_agent="Mozilla/5.0")),
        signed(event("clicked", mid, "scanned@example.com", url=links[0], after=300)),
        signed(event("clicked", mid, "scanned@example.com", url=links[1], after=300)),
        signed(event("clicked", mid, "reader@example.com", url=links[1], after=300)),
    ]
    # The scanner's two hits fall within one second.
    calls[5]["event-data"]["timestamp"] = calls[4]["event-data"]["timestamp"]
    await post_ok(world, *calls)
    await settle_all(app.state.sessionmaker)

    got = await counters(session, sent.id)
    why = {a: r["uncounted"] for a, r in got["recipients"].items()}
    assert why == {"echo@example.com": "within 30 seconds of sending", "gmail@example.com": "image proxy",
                   "apple@example.com": "image proxy", "scanned@example.com": "link scanner",
                   "reader@example.com": None}  # fmt: skip
    assert got["campaign"]["opened"] == 0 and got["campaign"]["clicked"] == 1
    assert got["recipients"]["reader@example.com"]["clicked"] == 1
    assert all(
        r["opened"] == 0 and r["clicked"] == 0 for a, r in got["recipients"].items() if a != "reader@example.com"
    )
    # Kept as events, and counted in the raw numbers, each saying why it is not a person's.
    assert got["emails"]["scanned@example.com"]["clicked"] == 2 and got["emails"]["gmail@example.com"]["opened"] == 1
    rows = (await session.execute(text("SELECT recipient, type, uncounted FROM email_events ORDER BY id"))).all()
    assert [(r.recipient, r.uncounted) for r in rows] == [
        ("echo@example.com", "within 30 seconds of sending"), ("echo@example.com", "within 30 seconds of sending"),
        ("gmail@example.com", "image proxy"), ("apple@example.com", "image proxy"),
        ("scanned@example.com", "link scanner"), ("scanned@example.com", "link scanner"),
        ("reader@example.com", None)]  # fmt: skip
    # What the sender sees: each rule's opens and clicks, beside counters that leave them out.
    stats = admin.data(await admin.get(f"/emails/{sent.id}/stats"))
    assert stats["set_aside"] == {
        "early": {"opened": 1, "clicked": 1},
        "image_proxy": {"opened": 2, "clicked": 0},
        "link_scanner": {"opened": 0, "clicked": 2},
    }
    assert stats["counts"]["opened"]["unique"] == 0 and stats["counts"]["clicked"]["unique"] == 1


async def test_thousands_of_concurrent_events_on_one_campaign_count_exactly(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    people = [f"p{i}@example.com" for i in range(60)]
    sent = await sent_campaign(admin, app, settings, people)
    rng = random.Random(9)
    kinds = ("delivered", "opened", "clicked", "stored", "accepted")
    events = [(rng.choice(kinds), rng.choice(people)) for _ in range(2000)]
    expected: dict[str, set[str]] = defaultdict(set)
    raw: dict[tuple[str, str], int] = defaultdict(int)
    for kind, person in events:
        expected[kind].add(person)
        raw[(person, kind)] += 1
    calls = [signed(event(k, sent.message_id, p, url="https://example.com/x")) for k, p in events]

    async def poster(part: list[dict[str, Any]]) -> None:
        for start in range(0, len(part), 10):
            await post_ok(world, *part[start : start + 10])

    # Two settlers count while the events arrive, as two workers would.
    settlers = [asyncio.create_task(run_settler(app.state.sessionmaker, interval=0.02)) for _ in range(2)]
    try:
        await asyncio.gather(*(poster(calls[i::8]) for i in range(8)))
        for _ in range(500):
            left = (await session.execute(text("SELECT count(*) FROM unsettled_events"))).scalar()
            await session.commit()
            if left == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        for task in settlers:
            task.cancel()
        for task in settlers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    got = await counters(session, sent.id)
    for kind in ("delivered", "opened", "clicked", "stored"):
        assert got["campaign"][kind] == len(expected[kind]), kind
        assert sum(r[kind] for r in got["recipients"].values()) == len(expected[kind]), kind
        assert {a: r[kind] for a, r in got["emails"].items()} == {p: raw[(p, kind)] for p in people}, kind
    assert got["campaign"]["accepted"] == len(people)


async def test_next_months_partitions_are_made_and_take_rows_already_in_the_default_one(session: AsyncSession) -> None:
    await session.execute(
        text("INSERT INTO email_events (type, source, created_at) VALUES ('opened', 'pixel', '2041-02-10T00:00:00Z')")
    )
    made = await ensure_partitions(session, today=date(2041, 1, 15))
    assert made == ["email_events_2041_01", "email_events_2041_02", "email_events_2041_03"]
    where = (await session.execute(text("SELECT tableoid::regclass::text FROM email_events"))).scalar_one()
    assert where == "email_events_2041_02"
    assert await ensure_partitions(session, today=date(2041, 1, 15)) == []
    await session.rollback()  # the test database keeps its own months only


async def suppressed(session: AsyncSession, brand: object) -> dict[str, tuple[str, str | None]]:
    rows = await session.execute(text("SELECT email, reason, detail FROM suppressions WHERE brand = :b"), {"b": brand})
    return {r.email: (r.reason, r.detail) for r in rows}


async def test_unsubscribes_complaints_and_bounces_suppress_and_a_later_campaign_skips_them(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    contact = await world.contact(admin, "Uma@Example.com", first_name="Uma")
    people = ["uma@example.com", "carl@example.com", "bea@example.com", "tom@example.com", "dan@example.com",
              "kept@example.com"]  # fmt: skip
    sent = await sent_campaign(admin, app, settings, people)
    mid = sent.message_id
    bounce = event("failed", mid, "bea@example.com", severity="permanent")
    bounce["delivery-status"] = {"code": 550, "message": "5.1.1 The email account does not exist"}
    week_ago = -8 * 86400.0
    await post_ok(
        world,
        signed(event("unsubscribed", mid, "uma@example.com")),
        signed(event("complained", mid, "carl@example.com")),
        signed(bounce),
        signed(event("failed", mid, "tom@example.com", severity="temporary")),
        signed(event("failed", mid, "tom@example.com", severity="temporary")),
        # Two temporary failures last week and one now are not three within seven days.
        signed(event("failed", mid, "dan@example.com", severity="temporary", after=week_ago)),
        signed(event("failed", mid, "dan@example.com", severity="temporary", after=week_ago)),
        signed(event("failed", mid, "dan@example.com", severity="temporary")),
        signed(event("delivered", mid, "kept@example.com")),
    )
    await settle_all(app.state.sessionmaker)
    assert await suppressed(session, admin.brand) == {
        "uma@example.com": ("unsubscribed", None),
        "carl@example.com": ("complained", None),
        "bea@example.com": ("bounced", "5.1.1 The email account does not exist"),
    }
    tags = await session.execute(text("SELECT tags FROM contacts WHERE id = :id"), {"id": contact["id"]})
    assert tags.scalar_one() == ["Unsubscribed"]

    # The third temporary failure within a week suppresses.
    await post_ok(world, signed(event("failed", mid, "tom@example.com", severity="temporary")))
    await settle_all(app.state.sessionmaker)
    assert (await suppressed(session, admin.brand))["tom@example.com"][0] == "bounced"

    later = await sent_campaign(admin, app, settings, people)
    rows = await session.execute(text("SELECT email_address FROM email_campaign_emails WHERE campaign = :c"),
                                 {"c": later.id})  # fmt: skip
    assert sorted(rows.scalars()) == ["dan@example.com", "kept@example.com"]


async def test_the_worker_settles_events_as_they_arrive(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await sent_campaign(admin, app, settings, ["ann@example.com"])
    worker = asyncio.create_task(work_and_settle(settings, 2))
    try:
        await post_ok(world, signed(event("delivered", sent.message_id, "ann@example.com")))
        for _ in range(200):
            got = await counters(session, sent.id)
            await session.commit()
            if got["campaign"]["delivered"]:
                break
            await asyncio.sleep(0.05)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    assert got["campaign"]["delivered"] == 1 and got["recipients"]["ann@example.com"]["delivered"] == 1


async def test_an_event_posted_twice_counts_once_at_every_level(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await sent_campaign(admin, app, settings, ["ann@example.com"])
    opened = event("opened", sent.message_id, "ann@example.com")
    # Mailgun retries a webhook it thinks failed: the same event, signed again with a new token.
    await post_ok(world, signed(opened))
    await post_ok(world, signed(opened), signed(event("opened", sent.message_id, "ann@example.com")))
    assert await settle_all(app.state.sessionmaker) == 3
    got = await counters(session, sent.id)
    assert got["emails"]["ann@example.com"]["opened"] == 2  # the retried copy is not a second open
    assert got["recipients"]["ann@example.com"]["opened"] == 1 and got["campaign"]["opened"] == 1
    kept = await session.execute(
        text("SELECT count(*) FILTER (WHERE uncounted LIKE 'duplicate%') FROM email_events WHERE campaign = :c"),
        {"c": sent.id},
    )
    assert kept.scalar_one() == 1
