"""The monthly quota of email a user may send through the service's ESP.

Every recipient of a campaign that goes out through the ESP (SMTP, Mailgun, the outbox) counts, one
shared message or one per recipient alike: a Bcc list costs the ESP as much as individual mail does.
A campaign sent through the user's own Gmail or Outlook does not; that provider's limits hold it.
The quota is the user's, not a brand's: it counts every campaign sent as them in any brand.
Counting per brand would let a member of several brands multiply their quota.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.models import EmailCampaign
from mailroom.crm.models import User
from mailroom.sending.expansion import EXPANSION_CTE, executed_this_month, month_bounds, through_esp

# The route depends on how many recipients the campaign expands to, so it is decided after counting them.
SCHEDULED_THROUGH_ESP = text(
    f"""
    WITH {EXPANSION_CTE},
    counted AS (SELECT campaign, count(*) AS n FROM expanded GROUP BY campaign)
    SELECT coalesce(sum(counted.n), 0) FROM counted JOIN email_campaigns c ON c.id = counted.campaign
    WHERE {through_esp("c", "counted.n")}
    """
)


async def scheduled_this_month(session: AsyncSession, user: uuid.UUID, now: datetime) -> int:
    """Recipients of the user's unsent campaigns due by the end of this month that will go through the ESP,
    expanded as they will be."""
    _, end = month_bounds(now)
    due = await session.scalars(
        select(EmailCampaign.id).where(
            EmailCampaign.from_ == user,
            EmailCampaign.executed_at.is_(None),
            EmailCampaign.deleted_at.is_(None),
            # Overdue ones count too: they are about to go out.
            EmailCampaign.due_at.is_not(None),
            EmailCampaign.due_at < end,
        )
    )
    campaigns = list(due)
    if not campaigns:
        return 0
    return int((await session.execute(SCHEDULED_THROUGH_ESP, {"campaigns": campaigns})).scalar_one())


async def quota(session: AsyncSession, user: uuid.UUID) -> dict[str, int]:
    now = datetime.now(UTC)
    limit = await session.scalar(select(User.email_quota).where(User.id == user))
    return {
        "executed": await executed_this_month(session, user, now),
        "scheduled": await scheduled_this_month(session, user, now),
        "quota": int(limit or 0),
    }
