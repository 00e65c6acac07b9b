"""The monthly quota of individual email a user may send.

The quota is the user's, not a brand's: it counts every campaign sent as them in any brand that
goes out one message per recipient (individual ones, and shared ones so large they are sent the
individual way). Counting per brand would let a member of several brands multiply their quota.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.models import EmailCampaign, EmailCampaignEmail
from mailroom.campaigns.recipients import EXPANSION_CTE
from mailroom.crm.models import User

# A campaign that is not individual goes out as one message To/Cc/Bcc up to this many recipients;
# from this many on it is sent one message per recipient, and counts against the quota like one.
SHARED_MESSAGE_LIMIT = 1000

RECIPIENTS_PER_CAMPAIGN = text(f"WITH {EXPANSION_CTE} SELECT campaign, count(*) AS n FROM expanded GROUP BY campaign")


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


async def executed_this_month(session: AsyncSession, user: uuid.UUID, now: datetime) -> int:
    """Emails sent one by one as the user, in any brand, this calendar month (UTC)."""
    start, end = month_bounds(now)
    return int(
        await session.scalar(
            select(func.count())
            .select_from(EmailCampaignEmail)
            .join(EmailCampaign, EmailCampaign.id == EmailCampaignEmail.campaign)
            .where(
                EmailCampaign.from_ == user,
                or_(EmailCampaign.individual.is_(True), EmailCampaign.recipients_count >= SHARED_MESSAGE_LIMIT),
                EmailCampaign.executed_at >= start,
                EmailCampaign.executed_at < end,
                EmailCampaign.deleted_at.is_(None),
                EmailCampaign.failed_at.is_(None),
            )
        )
        or 0
    )


async def scheduled_this_month(session: AsyncSession, user: uuid.UUID, now: datetime) -> int:
    """Recipients of the user's unsent campaigns due by the end of this month that will go out one by one,
    expanded as they will be."""
    _, end = month_bounds(now)
    due = await session.execute(
        select(EmailCampaign.id, EmailCampaign.individual).where(
            EmailCampaign.from_ == user,
            EmailCampaign.executed_at.is_(None),
            EmailCampaign.deleted_at.is_(None),
            # Overdue ones count too: they are about to go out.
            EmailCampaign.due_at.is_not(None),
            EmailCampaign.due_at < end,
        )
    )
    individual = {row.id: row.individual for row in due}
    if not individual:
        return 0
    counts = await session.execute(RECIPIENTS_PER_CAMPAIGN, {"campaigns": list(individual)})
    return sum(row.n for row in counts if individual[row.campaign] or row.n >= SHARED_MESSAGE_LIMIT)


async def quota(session: AsyncSession, user: uuid.UUID) -> dict[str, int]:
    now = datetime.now(UTC)
    limit = await session.scalar(select(User.email_quota).where(User.id == user))
    return {
        "executed": await executed_this_month(session, user, now),
        "scheduled": await scheduled_this_month(session, user, now),
        "quota": int(limit or 0),
    }
