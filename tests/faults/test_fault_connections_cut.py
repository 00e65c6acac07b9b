"""The worker's connections to PostgreSQL are cut while it waits for work (a failover, a proxy or pooler
restarting, an idle timeout): it connects again by itself and sends the next campaign, without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mailroom.db import libpq_url
from tests.support import faults
from tests.support.smtp_server import smtp_server
from tests.support.workers import WorkerGroup
from tests.support.world import World

RECIPIENTS = 300
# The worker's connections say who they are, so that only they are cut, not the test's own.
WORKER_APP = "mailroom-worker-under-test"


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[WorkerGroup]:
    with faults.fleet(database_url, tmp_path) as group:
        yield group


def named(database_url: str, application_name: str) -> str:
    return f"{database_url}{'&' if '?' in database_url else '?'}application_name={application_name}"


async def cut_connections(database_url: str) -> int:
    """Terminate every backend of the worker; returns how many there were."""
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (WORKER_APP,),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


@pytest.mark.slow
async def test_a_worker_whose_connections_are_cut_connects_again_and_sends(
    world: World, workers: WorkerGroup, database_url: str
) -> None:
    admin = await world.brand_admin()
    expected = await faults.seed_contacts(database_url, admin.brand, RECIPIENTS)
    with smtp_server() as smtp:
        workers.env["MAILROOM_DATABASE_URL"] = named(database_url, WORKER_APP)
        (worker,) = await faults.start_ready(workers, database_url, transport="smtp", smtp_url=smtp.url)
        cut = 0
        for _ in range(3):  # again as it reconnects: its job fetcher, listener, heartbeat and pools
            cut += await cut_connections(database_url)
            await asyncio.sleep(1.5)
        assert cut >= 3, f"only {cut} connections of the worker were found to cut: nothing was tested"
        assert worker.alive, f"the worker exited when its connections were cut\n{workers.logs()}"

        campaign = await faults.schedule_to_all_contacts(admin)
        final = await faults.wait_finished(database_url, campaign, workers, within=90)
        received = sorted(address.lower() for m in smtp.messages for address in m.rcpt_tos)

    assert worker.alive, "the same worker sent the campaign"
    assert received == sorted(expected)
    assert final.failed_at is None, final.failure
    assert (final.sent_rows, final.error_rows) == (RECIPIENTS, 0)
