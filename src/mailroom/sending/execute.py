"""Executing a due campaign: claim it once, expand its recipients, check the quota, queue its slices.

All of it happens in one transaction holding the campaign's row lock, so a campaign is executed at
most once however many workers look, and its send jobs exist exactly when its recipient rows do.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.audience import (
    EXPANSION_CTE,
    SEND_TYPE_RANK,
    SHARED_MESSAGE_LIMIT,
    executed_this_month,
    through_esp,
)
from mailroom.queue import QUEUE, defer_jobs, defer_statement

log = logging.getLogger(__name__)

# A job sends one slice (a range of recipient positions). The task name keeps its first spelling:
# jobs already queued in live databases refer to it by this string.
SEND_TASK = "mailroom.send_batch"
QUOTA_EXCEEDED = "Maximum marketing email quota per month exceeded."

CLAIM_DUE = text(
    """
    SELECT id, "from", individual FROM email_campaigns
    WHERE due_at <= now() AND executed_at IS NULL AND deleted_at IS NULL
    ORDER BY due_at
    FOR UPDATE SKIP LOCKED
    LIMIT 1
    """
)

NEXT_DUE = text(
    """
    SELECT min(due_at) FROM email_campaigns
    WHERE executed_at IS NULL AND deleted_at IS NULL AND due_at IS NOT NULL
    """
)

# Positions follow send type then address, so the shared-message path reads To, Cc, Bcc in order.
INSERT_RECIPIENTS = text(
    f"""
    WITH {EXPANSION_CTE}
    INSERT INTO email_campaign_emails (campaign, seq, email_address, send_type, contact, agent)
    SELECT campaign,
           row_number() OVER (ORDER BY {SEND_TYPE_RANK}, address),
           address, send_type, contact, agent
    FROM expanded
    """
)

# One job per range of positions, deferred in this transaction.
DEFER_SLICES = defer_statement(
    """
    SELECT jsonb_build_object('campaign', CAST(:campaign AS text), 'first', s, 'last', least(s + :size - 1, :count))
    FROM generate_series(1, :count, :size) AS s
    """
)

# A URL's query or fragment, or its user:password@, may be a grant as good as a password.
_URL_QUERY = re.compile(r"[?#]\S*")
_URL_USERINFO = re.compile(r"//[^/\s@]*@")

# Answers whether the campaign goes through the ESP, which only its recipient count could still change.
SET_RECIPIENTS_COUNT = text(
    "UPDATE email_campaigns c SET recipients_count = :n WHERE c.id = :id "
    f"RETURNING {through_esp('c', 'c.recipients_count')} AS through_esp"
)


@dataclass(frozen=True)
class Execution:
    campaign: uuid.UUID
    recipients: int
    jobs: int
    failure: str | None = None


def _loggable(reason: str) -> str:
    """The reason without what a URL in it may carry as a secret (the stored reason is the user's own)."""
    return _URL_USERINFO.sub("//<redacted>@", _URL_QUERY.sub("?<redacted>", reason))


async def fail_campaign(session: AsyncSession, campaign: uuid.UUID, reason: str, within: str) -> None:
    """Whole-campaign failure: the reason is safe to show a user; unsent rows carry it too."""
    failed = (
        await session.execute(
            text(
                "UPDATE email_campaigns SET failed_at = now(), failure = :reason, failed_within = :within "
                "WHERE id = :id AND failed_at IS NULL "
                "RETURNING recipients_count, sent, failed, extract(epoch FROM now() - executed_at) AS seconds"
            ),
            {"id": campaign, "reason": reason, "within": within},
        )
    ).first()
    if failed is not None:  # only the first failure of a campaign is its failure
        seconds = float(failed.seconds or 0)
        log.warning(
            "campaign %s failed in %s: %d recipients, %d sent, %d failed, %.1f s since executed: %s",
            campaign,
            within,
            failed.recipients_count or 0,
            failed.sent,
            failed.failed,
            seconds,
            _loggable(reason),
            extra={
                "campaign": str(campaign),
                "recipients": failed.recipients_count or 0,
                "sent": failed.sent,
                "failed": failed.failed,
                "duration": round(seconds, 3),
            },
        )
    await session.execute(
        text(
            "UPDATE email_campaign_emails SET error = :reason WHERE campaign = :id AND email IS NULL AND error IS NULL"
        ),
        {"id": campaign, "reason": reason},
    )


async def execute_next_due(session: AsyncSession, *, slice_size: int) -> Execution | None:
    """Claim and execute the most overdue campaign, or return None when nothing is due."""
    row = (await session.execute(CLAIM_DUE)).first()
    if row is None:
        return None
    started = time.perf_counter()
    campaign, sender, individual = row
    await session.execute(text("UPDATE email_campaigns SET executed_at = now() WHERE id = :id"), {"id": campaign})
    inserted = await session.execute(INSERT_RECIPIENTS, {"campaigns": [campaign]})
    count = cast(CursorResult[Any], inserted).rowcount
    counted = await session.execute(SET_RECIPIENTS_COUNT, {"n": count, "id": campaign})
    if counted.scalar_one():
        # Two workers executing two campaigns of one user at once would each see the other's rows
        # uncommitted and both pass: the check is serialised per user.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(CAST(:u AS text), 7))"), {"u": sender}
        )
        quota = int(
            (await session.execute(text("SELECT email_quota FROM users WHERE id = :u"), {"u": sender})).scalar_one()
        )
        # This campaign's rows, inserted above, are already part of what is used.
        used = await executed_this_month(session, sender, datetime.now(UTC))
        if used > quota:
            await fail_campaign(session, campaign, QUOTA_EXCEEDED, "execute")
            log.info("campaign %s refused: quota %d, would reach %d", campaign, quota, used)
            return Execution(campaign, count, 0, QUOTA_EXCEEDED)
    # One shared message cannot be split across jobs.
    size = slice_size if individual or count >= SHARED_MESSAGE_LIMIT else max(count, 1)
    jobs = 0
    if count:
        await defer_jobs(session, DEFER_SLICES, SEND_TASK, campaign=str(campaign), size=size, count=count)
        jobs = -(-count // size)
    seconds = time.perf_counter() - started
    log.info(
        "campaign %s executed: %d recipients in %d jobs, %.3f s",
        campaign,
        count,
        jobs,
        seconds,
        extra={"campaign": str(campaign), "recipients": count, "jobs": jobs, "duration": round(seconds, 3)},
    )
    return Execution(campaign, count, jobs)


# Finished jobs are deleted (delete_jobs="successful"), so this reads only queued, running and failed ones.
SEND_JOBS = text(
    """
    SELECT count(*) FILTER (WHERE status = 'todo') AS waiting, count(*) FILTER (WHERE status = 'doing') AS running
    FROM procrastinate_jobs WHERE queue_name = :queue AND task_name = :task AND status IN ('todo', 'doing')
    """
)


async def send_jobs(session: AsyncSession) -> Any:
    """Send jobs waiting and running (a row of `waiting`, `running`)."""
    return (await session.execute(SEND_JOBS, {"queue": QUEUE, "task": SEND_TASK})).one()
