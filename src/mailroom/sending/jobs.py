"""The worker: executes due campaigns and runs send jobs (procrastinate, on the same PostgreSQL).

Due campaigns are found by one watcher per worker, woken by NOTIFY when a campaign is scheduled and
by a timer at the next due time, so a campaign goes out within moments of due_at and never before.
Send jobs are procrastinate jobs deferred in the transaction that executed the campaign. A worker
that dies mid-job stops heartbeating; its jobs are handed to live workers after STALLED_AFTER seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta

import procrastinate
import psycopg
import sqlalchemy.exc
from procrastinate import RetryStrategy
from procrastinate.exceptions import ConnectorException
from procrastinate.jobs import Job
from procrastinate.retry import RetryDecision
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.config import Settings
from mailroom.crm.notices import NOTICE_TASK, send_notice
from mailroom.crypto import SecretBox
from mailroom.db import libpq_url, make_engine, make_sessionmaker, resolve_database_url
from mailroom.files.storage import storage_from_settings
from mailroom.mailboxes.access import Mailboxes, Paused
from mailroom.mailboxes.jobs import MAILBOX_ACTION_TASK, run_mailbox_action
from mailroom.queue import QUEUE
from mailroom.sending.attachments import AttachmentCache
from mailroom.sending.context import Esp, Links, SendContext
from mailroom.sending.domains import SendingDomains
from mailroom.sending.execute import NEXT_DUE, SEND_TASK, execute_next_due
from mailroom.sending.ratelimit import RateLimiter
from mailroom.sending.record import give_up
from mailroom.sending.slices import RetryLater, send_slice
from mailroom.sending.testmail import TEST_TASK, send_test
from mailroom.templating.renderer import RenderLimits, RenderPool
from mailroom.transports.base import TransientSendError
from mailroom.transports.registry import (
    default_from,
    domain_provider,
    domain_setup,
    make_transport,
    message_domain,
    transport_name,
)

log = logging.getLogger(__name__)

CHANNEL = "mailroom_campaign_due"
# New jobs wake the worker through LISTEN/NOTIFY; a job retried later (a throttled mailbox's
# Retry-After, a backoff) is only found by polling. procrastinate polls every 5 s, so a 1 s pause
# cost up to 5 s; one cheap query a second keeps retries near the time they were asked for.
RETRY_POLL = 1.0
# Between procrastinate's worker stopping by itself (its database gone) and starting it again.
WORKER_RESTART_DELAY = 1.0
HEARTBEAT = 2.0
STALLED_AFTER = 8.0
# The longest a watcher sleeps without a NOTIFY: a safety net, not the mechanism.
MAX_SLEEP = 5.0
RETRYABLE = (
    TransientSendError,
    Paused,
    RetryLater,
    OSError,
    psycopg.OperationalError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)


async def execute_due_campaigns(sessionmaker: async_sessionmaker[AsyncSession], slice_size: int) -> int:
    """Execute every campaign that is due now; returns how many send jobs were queued."""
    jobs = 0
    while True:
        async with sessionmaker() as session, session.begin():
            execution = await execute_next_due(session, slice_size=slice_size)
        if execution is None:
            break
        jobs += execution.jobs
    if jobs >= 1000:
        # Fresh statistics keep the job-fetch query on its index after a large burst of jobs. Committed:
        # statistics gathered in a transaction that rolls back are thrown away with it.
        async with sessionmaker() as session, session.begin():
            await session.execute(text("ANALYZE procrastinate_jobs"))
    return jobs


async def _seconds_to_next_due(sessionmaker: async_sessionmaker[AsyncSession]) -> float:
    async with sessionmaker() as session:
        next_due: datetime | None = (await session.execute(NEXT_DUE)).scalar_one()
    if next_due is None:
        return MAX_SLEEP
    return max(0.0, min(MAX_SLEEP, (next_due - datetime.now(UTC)).total_seconds()))


async def watch_due_campaigns(sessionmaker: async_sessionmaker[AsyncSession], conninfo: str, slice_size: int) -> None:
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                while True:
                    await execute_due_campaigns(sessionmaker, slice_size)
                    timeout = await _seconds_to_next_due(sessionmaker)
                    if timeout > 0:
                        async for _ in conn.notifies(timeout=timeout, stop_after=1):
                            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("due-campaign watcher lost its connection; reconnecting")
            await asyncio.sleep(1.0)


async def recover_stalled_jobs(app: procrastinate.App) -> None:
    """Jobs of a worker that stopped heartbeating (killed, machine lost) go back to the queue."""
    while True:
        try:
            for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER):
                log.warning("retrying job %s of a worker that stopped", job.id)
                await app.job_manager.retry_job(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not look for stalled jobs")
        await asyncio.sleep(STALLED_AFTER / 2)


class SendRetry(RetryStrategy):
    """Exponential backoff, but never sooner than the provider asked (Retry-After).

    A paused mailbox is waited for however often it happens: throttling is not a failure.
    """

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, Paused):
            return RetryDecision(retry_at=datetime.now(UTC) + timedelta(seconds=exception.retry_after))
        decision = super().get_retry_decision(exception=exception, job=job)
        asked = getattr(exception, "retry_after", None)
        if decision is None or not asked:
            return decision
        wanted = datetime.now(UTC) + timedelta(seconds=min(float(asked), 3600.0))
        if decision.retry_at is None or decision.retry_at < wanted:
            decision.retry_at = wanted
        return decision


# 3, 5, 9, 17 ... seconds: quick through a short outage, about a day and a half in all.
SEND_RETRY = SendRetry(max_attempts=16, wait=1, exponential_wait=2, retry_exceptions=set(RETRYABLE))
# A test is wanted now: through a short outage, but one that arrives tomorrow is no use to anybody.
TEST_RETRY = SendRetry(max_attempts=6, wait=1, exponential_wait=2, retry_exceptions=set(RETRYABLE))


def build_job_app(conninfo: str, ctx: SendContext) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=4))

    @app.task(name=SEND_TASK, queue=QUEUE, pass_context=True, retry=SEND_RETRY)
    async def send_slice_job(context: procrastinate.JobContext, campaign: str, first: int, last: int) -> None:
        job = context.job
        where = f"send_slice:{job.id if job else None}"
        try:
            await send_slice(ctx, uuid.UUID(campaign), first, last, job=where)
        except RETRYABLE as exc:
            if isinstance(exc, Paused) or job is None or job.attempts + 1 < (SEND_RETRY.max_attempts or 0):
                raise
            # The last attempt: the rows still unsent get the reason instead of waiting forever.
            async with ctx.sessionmaker() as session, session.begin():
                await give_up(session, uuid.UUID(campaign), first, last, f"gave up after repeated failures: {exc}")

    @app.task(name=NOTICE_TASK, queue=QUEUE, retry=SEND_RETRY)
    async def send_notice_job(
        kind: str,
        user: str,
        brand: str | None = None,
        role: str | None = None,
        by: str | None = None,
        link: str | None = None,
    ) -> None:
        async with ctx.sessionmaker() as session:
            await send_notice(
                session,
                ctx.esp.transport,
                ctx.links.box,
                kind=kind,
                user=uuid.UUID(user),
                public_url=ctx.links.public_url,
                sender=ctx.esp.default_from,
                domain=ctx.esp.message_domain,
                brand=uuid.UUID(brand) if brand else None,
                role=role,
                by=uuid.UUID(by) if by else None,
                link=uuid.UUID(link) if link else None,
            )

    @app.task(name=TEST_TASK, queue=QUEUE, pass_context=True, retry=TEST_RETRY)
    async def send_test_job(context: procrastinate.JobContext, campaign: str, user: str) -> None:
        job = context.job
        try:
            await send_test(ctx, uuid.UUID(campaign), uuid.UUID(user))
        except RETRYABLE as exc:
            if isinstance(exc, Paused) or job is None or job.attempts + 1 < (TEST_RETRY.max_attempts or 0):
                raise
            # Nothing else to undo: a test leaves no trace but this line.
            log.warning("test of campaign %s not sent, gave up after repeated failures: %s", campaign, exc)

    @app.task(name=MAILBOX_ACTION_TASK, queue=QUEUE, retry=SEND_RETRY)
    async def mailbox_action_job(kind: str, credential: str, action: str, message_ids: list[str]) -> None:
        await run_mailbox_action(
            ctx.mailboxes,
            sessionmaker=ctx.sessionmaker,
            kind=kind,
            credential=uuid.UUID(credential),
            action=action,
            message_ids=message_ids,
        )

    return app


async def _run_job_worker(app: procrastinate.App, concurrency: int) -> None:
    """procrastinate's worker, started again whenever it stops by itself.

    It stops when a side task fails or a job fetch raises, as when its listener cannot reconnect while
    PostgreSQL restarts; the jobs it was running finish first (they wait for the database to record what
    they sent). Only cancelling this coroutine (the process stopping) ends it.
    """
    while True:
        try:
            await app.run_worker_async(
                queues=[QUEUE],
                concurrency=concurrency,
                install_signal_handlers=False,
                update_heartbeat_interval=HEARTBEAT,
                fetch_job_polling_interval=RETRY_POLL,
                stalled_worker_timeout=STALLED_AFTER,
                delete_jobs="successful",
            )
            log.warning("the job worker stopped by itself; starting it again in %.0f s", WORKER_RESTART_DELAY)
        except (ConnectorException, psycopg.OperationalError) as exc:
            log.warning("the job worker lost the database (%s); starting it again in %.0f s", exc, WORKER_RESTART_DELAY)
        await asyncio.sleep(WORKER_RESTART_DELAY)


async def run_worker(settings: Settings, *, concurrency: int = 8) -> None:
    url = resolve_database_url(settings)
    conninfo = libpq_url(url)
    engine = make_engine(url, pool_size=concurrency + 2)
    sessionmaker = make_sessionmaker(engine)
    transport = make_transport(settings)
    renderer = RenderPool(RenderLimits.from_settings(settings))
    box = SecretBox(settings.resolved_secret_key())
    mailboxes = Mailboxes(settings, sessionmaker, box)
    ctx = SendContext(
        sessionmaker=sessionmaker,
        renderer=renderer,
        esp=Esp(
            transport=transport,
            limiter=RateLimiter(sessionmaker, transport_name(settings), settings.rate_limit),
            message_domain=message_domain(settings),
            default_from=default_from(settings),
            domains=SendingDomains(sessionmaker, box, provider=domain_provider(settings), setup=domain_setup(settings)),
        ),
        mailboxes=mailboxes,
        links=Links(box, settings.public_url, tracking=settings.tracking),
        attachments=AttachmentCache(
            sessionmaker,
            storage_from_settings(settings, box),
            allow_private_links=settings.allow_private_attachment_links,
            deadline=settings.attachment_fetch_timeout,
        ),
    )
    app = build_job_app(conninfo, ctx)
    log.info("worker started: transport %s, concurrency %d", transport_name(settings), concurrency)
    try:
        async with app.open_async():
            tasks = [
                asyncio.create_task(watch_due_campaigns(sessionmaker, conninfo, settings.batch_size)),
                asyncio.create_task(recover_stalled_jobs(app)),
            ]
            try:
                await _run_job_worker(app, concurrency)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        await renderer.aclose()
        await mailboxes.aclose()
        await transport.aclose()
        await engine.dispose()
