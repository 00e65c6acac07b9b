"""Running a real worker inside a test, and waiting for what it does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.config import Settings
from mailroom.sending.jobs import run_worker
from tests.support.smtp_server import FakeSmtpServer, smtp_server


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, **overrides: Any) -> AsyncIterator[None]:
    """A worker (due-campaign watcher + send jobs) on the test database, stopped at the end."""
    task = asyncio.create_task(run_worker(settings.model_copy(update=overrides), concurrency=4))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until_sent(
    sessionmaker: async_sessionmaker[AsyncSession], campaign: str, *, within: float = 20.0
) -> dict[str, Any]:
    """Wait until the campaign is executed and every recipient row is sent or failed; return the campaign row."""
    deadline = time.monotonic() + within
    while True:
        async with sessionmaker() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT c.executed_at, c.failed_at, c.failure, c.recipients_count, c.sent, c.failed, "
                        "(SELECT count(*) FROM email_campaign_emails e WHERE e.campaign = c.id "
                        " AND e.email IS NULL AND e.error IS NULL) AS pending, "
                        "(SELECT count(email) FROM email_campaign_emails e WHERE e.campaign = c.id) AS sent_rows "
                        "FROM email_campaigns c WHERE c.id = :id"
                    ),
                    {"id": campaign},
                )
            ).one()
        # Done when nothing is pending and the running totals have caught up with the rows.
        settled = row.pending == 0 and row.sent == row.sent_rows
        done = row.executed_at is not None and (settled or row.failed_at is not None)
        if done:
            return dict(row._mapping)
        if time.monotonic() > deadline:
            raise AssertionError(f"campaign {campaign} not sent in {within}s: {dict(row._mapping)}")
        await asyncio.sleep(0.05)


async def wait_until_no_jobs(sessionmaker: async_sessionmaker[AsyncSession], *, within: float = 20.0) -> None:
    """Wait until no job of the queue is waiting or running: whatever the workers were given is done."""
    deadline = time.monotonic() + within
    while True:
        async with sessionmaker() as session:
            left = (
                await session.execute(text("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"))
            ).scalar_one()
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{left} jobs still queued or running after {within}s")
        await asyncio.sleep(0.05)


async def sent_over_smtp(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, campaign: str, **overrides: Any
) -> FakeSmtpServer:
    """Run a worker sending through a local SMTP server until the campaign is sent; that server, holding
    what it received."""
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url, **overrides):
            await wait_until_sent(sessionmaker, campaign)
    return server


async def first_mail_over_smtp(settings: Settings, *, within: float = 10.0) -> FakeSmtpServer:
    """Run a worker sending through a local SMTP server until that server has received a message (the
    service's own notices: confirmations, invitations); the server, holding it."""
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                if server.messages:
                    break
                await asyncio.sleep(0.05)
    return server
