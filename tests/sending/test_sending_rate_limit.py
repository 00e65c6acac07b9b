"""MAILROOM_RATE_LIMIT holds across workers: two workers together stay under the rate."""

from __future__ import annotations

import time

from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from tests.support.campaigns import received, schedule
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World


async def test_two_workers_share_one_rate(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    await world.contacts(admin, [{"emails": [f"r{i}@example.com"], "tags": ["t"]} for i in range(60)])
    made = await schedule(admin, path="/emails/individual", to=[{"recipient_type": "Tag", "tag": "t"}], due_at=None)
    with smtp_server() as server:
        limits = {"transport": "smtp", "smtp_url": server.url, "rate_limit": 40.0, "batch_size": 10}
        async with running_worker(settings, **limits), running_worker(settings, **limits):
            async with app.state.sessionmaker() as s, s.begin():
                await s.execute(text("UPDATE email_campaigns SET due_at = now() WHERE id = :id"), {"id": made["id"]})
            started = time.monotonic()
            await wait_until_sent(app.state.sessionmaker, made["id"])
            elapsed = time.monotonic() - started
    assert len(received(server)) == 60
    # 60 messages at 40/s: the first 10 may go at once, the other 50 need at least 1.25 s.
    assert elapsed >= 1.2, elapsed
