"""The monthly quota of individual email a user may send.

The quota is the user's, not a brand's: it counts every campaign sent as them in any brand that
goes out one message per recipient (individual ones, and shared ones so large they are sent the
individual way). Counting per brand would let a member of several brands multiply their quota.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.models import EmailCampaign
from mailroom.crm.models import User
from mailroom.sending.expansion import EXPANSION_CTE, SHARED_MESSAGE_LIMIT, executed_this_month, month_bounds

RECIPIENTS_PER_CAMPAIGN = text(f"WITH {EXPANSION_CTE} SELECT campaign, count(*) AS n FROM expanded GROUP BY campaign")


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
