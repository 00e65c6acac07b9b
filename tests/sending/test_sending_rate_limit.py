"""MAILROOM_RATE_LIMIT holds across workers: two workers together stay under the rate."""

from __future__ import annotations

import time
from collections import Counter

from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from tests.support.campaigns import received, schedule
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World

RATE = 40.0
BATCH = 10
RECIPIENTS = 60


async def test_two_workers_share_one_rate(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    expected = [f"r{i}@example.com" for i in range(RECIPIENTS)]
    await world.contacts(admin, [{"emails": [address], "tags": ["t"]} for address in expected])
    made = await schedule(admin, path="/emails/individual", to=[{"recipient_type": "Tag", "tag": "t"}], due_at=None)
    with smtp_server() as server:
        limits = {"transport": "smtp", "rate_limit": RATE, "batch_size": BATCH}
        # Each worker names itself differently in EHLO, so the server can tell who sent what.
        async with (
            running_worker(settings, smtp_url=server.url_for("first.worker.test"), **limits),
            running_worker(settings, smtp_url=server.url_for("second.worker.test"), **limits),
        ):
            # Before the campaign falls due, so before the first reservation of send time.
            started = time.monotonic()
            async with app.state.sessionmaker() as s, s.begin():
                await s.execute(text("UPDATE email_campaigns SET due_at = now() WHERE id = :id"), {"id": made["id"]})
            await wait_until_sent(app.state.sessionmaker, made["id"])
    assert received(server) == sorted(expected), "each recipient exactly once"
    by_worker = Counter(m.helo for m in server.messages)
    assert set(by_worker) == {"first.worker.test", "second.worker.test"}, by_worker
    # The workers reserve send time on one shared row: a batch goes no sooner than its slot, and the
    # slots follow each other at BATCH / RATE seconds. So however the two split the batches, by any
    # moment t after the campaign fell due at most BATCH + RATE * t messages had arrived. Counted from
    # the server's own arrival times; a busy machine only delays arrivals, which this bound allows.
    # Two limiters of their own would let both workers' first batches arrive together (2 x BATCH).
    arrivals = sorted(m.at - started for m in server.messages)
    over = [(n, round(t, 3)) for n, t in enumerate(arrivals, 1) if n > BATCH + RATE * t]
    assert not over, f"more messages than the rate allows by these times: {over[:5]}"
