"""The monthly quota of individual email a user may send in a brand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.models import EmailCampaign, EmailCampaignEmail
from mailroom.campaigns.recipients import COUNT_RECIPIENTS
from mailroom.crm.models import User


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


async def executed_this_month(session: AsyncSession, user: uuid.UUID, brand: uuid.UUID, now: datetime) -> int:
    """Individual emails the user's campaigns in the brand went out to this calendar month (UTC)."""
    start, end = month_bounds(now)
    return int(
        await session.scalar(
            select(func.count())
            .select_from(EmailCampaignEmail)
            .join(EmailCampaign, EmailCampaign.id == EmailCampaignEmail.campaign)
            .where(
                EmailCampaign.from_ == user,
                EmailCampaign.brand == brand,
                EmailCampaign.individual.is_(True),
                EmailCampaign.executed_at >= start,
                EmailCampaign.executed_at < end,
                EmailCampaign.deleted_at.is_(None),
                EmailCampaign.failed_at.is_(None),
            )
        )
        or 0
    )


async def scheduled_this_month(session: AsyncSession, user: uuid.UUID, brand: uuid.UUID, now: datetime) -> int:
    """Recipients of the user's unsent individual campaigns due by the end of this month, expanded as they will be."""
    _, end = month_bounds(now)
    campaigns = list(
        await session.scalars(
            select(EmailCampaign.id).where(
                EmailCampaign.from_ == user,
                EmailCampaign.brand == brand,
                EmailCampaign.individual.is_(True),
                EmailCampaign.executed_at.is_(None),
                EmailCampaign.deleted_at.is_(None),
                # Overdue ones count too: they are about to go out.
                EmailCampaign.due_at.is_not(None),
                EmailCampaign.due_at < end,
            )
        )
    )
    if not campaigns:
        return 0
    return int(await session.scalar(COUNT_RECIPIENTS, {"campaigns": campaigns}) or 0)


async def quota(session: AsyncSession, user: uuid.UUID, brand: uuid.UUID) -> dict[str, int]:
    now = datetime.now(UTC)
    limit = await session.scalar(select(User.email_quota).where(User.id == user))
    return {
        "executed": await executed_this_month(session, user, brand, now),
        "scheduled": await scheduled_this_month(session, user, brand, now),
        "quota": int(limit or 0),
    }
