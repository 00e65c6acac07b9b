"""What the fault tests (tests/faults) share: worker subprocesses on the test database, a large
individual campaign to every contact of a brand, and polling the database until it is done.

Each test module wraps ``fleet`` in a small ``workers`` fixture of its own: tests/faults has no
conftest.py, so that its modules do not depend on how the rest of the suite is laid out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from mailroom.db import libpq_url
from mailroom.sending.execute import SEND_TASK
from tests.support.workers import (
    CAMPAIGN_STATE,
    SEED_CONTACTS,
    CampaignState,
    WorkerGroup,
    WorkerProcess,
    run_migrate,
    seeded_address,
    worker_env,
    worker_group,
)
from tests.support.world import Actor

DOMAIN = "faults.example"
SUBJECT = "Hello {{recipient.first_name}}"
HTML = (
    "<html><body><p>Dear {{recipient.first_name}} {{recipient.last_name}},</p>"
    "<p>Our open house is on Sunday at 2pm. Bring a friend.</p></body></html>"
)

# procrastinate's tables: a killed worker leaves its jobs and its registration behind, and the
# suite's per-test TRUNCATE only knows the application's tables.
JOB_TABLES = ("procrastinate_events", "procrastinate_periodic_defers", "procrastinate_jobs", "procrastinate_workers")

_migrated: set[str] = set()


def reset_job_queue(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        present = [t for t in JOB_TABLES if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone() != (None,)]
        if present:
            conn.execute("TRUNCATE " + ", ".join(present) + " CASCADE")


def prepare(database_url: str, data_dir: Path) -> dict[str, str]:
    """Worker environment for ``database_url``, after `mailroom migrate` ran on it once."""
    env = worker_env(database_url, data_dir)
    if database_url not in _migrated:
        run_migrate(env)
        _migrated.add(database_url)
    return env


@contextmanager
def fleet(database_url: str, tmp_path: Path) -> Iterator[WorkerGroup]:
    """Workers on ``database_url`` (``group.start(...)``), all killed when the block ends."""
    env = prepare(database_url, tmp_path / "data")
    try:
        with worker_group(env, tmp_path / "logs") as group:
            yield group
    finally:
        reset_job_queue(database_url)


async def _fetch(database_url: str, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn:
        return await (await conn.execute(query, params)).fetchall()


async def seed_contacts(database_url: str, brand: object, count: int, *, first: int = 1) -> list[str]:
    """``count`` contacts in ``brand`` (set-based insert); returns their addresses."""
    last = first + count - 1
    params = {"brand": brand, "domain": DOMAIN, "first": first, "last": last}
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn:
        await conn.execute(SEED_CONTACTS, params)
    return [seeded_address(i, DOMAIN) for i in range(first, last + 1)]


async def schedule_to_all_contacts(
    actor: Actor, *, due_in: float = 1.0, subject: str = SUBJECT, html: str = HTML, tags: list[str] | None = None
) -> str:
    """An individual campaign to every contact of the actor's brand, due in ``due_in`` seconds."""
    due = (datetime.now(UTC) + timedelta(seconds=due_in)).isoformat()
    body: dict[str, Any] = {
        "to": [{"recipient_type": "AllContacts"}],
        "subject": subject,
        "html": html,
        "due_at": due,
    }
    if tags:
        body["tags"] = tags
    made = actor.data(await actor.post("/emails/individual", body))
    return str(made["id"])


async def read_state(database_url: str, campaign: str) -> CampaignState:
    (row,) = await _fetch(database_url, CAMPAIGN_STATE, {"campaign": campaign})
    return CampaignState(*row)


async def recipient_rows(database_url: str, campaign: str) -> list[tuple[Any, ...]]:
    """(address, email id, error, emails.sent_at, emails.esp_message_id) of every recipient row."""
    return await _fetch(
        database_url,
        "SELECT ce.email_address, ce.email, ce.error, e.sent_at, e.esp_message_id "
        "FROM email_campaign_emails ce LEFT JOIN emails e ON e.id = ce.email "
        "WHERE ce.campaign = %(campaign)s ORDER BY ce.seq",
        {"campaign": campaign},
    )


async def send_jobs_retried(database_url: str, campaign: str) -> tuple[int, int]:
    """(the campaign's send jobs that failed at least once and were put back for a retry, its send jobs)."""
    (row,) = await _fetch(
        database_url,
        "SELECT count(*) FILTER (WHERE attempts > 0), count(*) FROM procrastinate_jobs "
        "WHERE task_name = %(task)s AND args->>'campaign' = %(campaign)s",
        {"task": SEND_TASK, "campaign": campaign},
    )
    return int(row[0]), int(row[1])


async def until(
    check: Callable[[], bool | Awaitable[bool]], *, within: float, what: str, group: WorkerGroup | None = None
) -> None:
    """Poll every 0.2 s. Fails early, with the workers' logs, once every worker of ``group`` is gone."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if group is not None and group.processes and not group.alive:
            raise AssertionError(f"every worker exited while waiting for {what}\n{group.logs()}")
        if time.monotonic() > deadline:
            logs = f"\n{group.logs()}" if group is not None else ""
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}{logs}")
        await asyncio.sleep(0.2)


async def start_ready(group: WorkerGroup, database_url: str, count: int = 1, **settings: Any) -> list[WorkerProcess]:
    """Start ``count`` workers and wait until each has registered with the job queue."""

    async def registered() -> int:
        rows = await _fetch(database_url, "SELECT to_regclass('procrastinate_workers') IS NOT NULL", {})
        if not rows[0][0]:
            return -1
        return int((await _fetch(database_url, "SELECT coalesce(max(id), 0) FROM procrastinate_workers", {}))[0][0])

    baseline = await registered()
    started = [group.start(**settings) for _ in range(count)]
    if baseline < 0:  # no registry to watch: give the processes time to start listening
        await asyncio.sleep(3)
        return started

    async def ready() -> bool:
        query = "SELECT count(*) FROM procrastinate_workers WHERE id > %(baseline)s"
        return int((await _fetch(database_url, query, {"baseline": baseline}))[0][0]) >= count

    await until(ready, within=60, what=f"{count} worker(s) to start", group=group)
    return started


async def wait_finished(database_url: str, campaign: str, group: WorkerGroup, *, within: float) -> CampaignState:
    """Poll until every recipient row is sent or failed; return the final state."""
    state: list[CampaignState] = []

    async def finished() -> bool:
        state[:] = [await read_state(database_url, campaign)]
        return state[0].finished

    try:
        await until(finished, within=within, what=f"campaign {campaign} to finish", group=group)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast state: {state[0] if state else None}") from None
    return state[0]
