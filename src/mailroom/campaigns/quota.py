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
from typing import Annotated, Any

from psycopg import AsyncConnection
from pydantic import Field
from sqlalchemy import text
from typing_extensions import TypedDict

from mailroom.campaigns.audience import EXECUTED_IN_MONTH, EXPANSION_CTE, month_bounds, through_esp
from mailroom.crm.membership import ROLE_IN_BRAND, required
from mailroom.db import fetch_rows
from mailroom.serialize import closed

# The route depends on how many recipients the campaign expands to, so it is decided after counting them.
SCHEDULED_THROUGH_ESP = text(
    f"""
    WITH {EXPANSION_CTE},
    counted AS (SELECT campaign, count(*) AS n FROM expanded GROUP BY campaign)
    SELECT coalesce(sum(counted.n), 0) FROM counted JOIN email_campaigns c ON c.id = counted.campaign
    WHERE {through_esp("c", "counted.n")}
    """
)


# The caller's role in the brand the request names (403 without one), the limit, what went out this month,
# and the unsent campaigns due by its end (overdue ones count too: they are about to go out), in one
# statement.
QUOTA_NOW = text(
    f"""
    SELECT ({ROLE_IN_BRAND.format(brand=":brand", user=":user")}) AS role,
           (SELECT email_quota FROM users WHERE id = :user) AS quota,
           ({EXECUTED_IN_MONTH.text}) AS executed,
           ARRAY(SELECT id FROM email_campaigns
                 WHERE "from" = :user AND executed_at IS NULL AND deleted_at IS NULL
                   AND due_at IS NOT NULL AND due_at < :end) AS due
    """
)


@closed
class QuotaOut(TypedDict):
    """The caller's monthly quota and what counts against it (recipients of mail through the service's ESP)."""

    executed: Annotated[int, Field(description="Recipients of campaigns executed this calendar month (UTC)")]
    scheduled: Annotated[int, Field(description="Recipients of unsent campaigns due before the month ends")]
    quota: Annotated[int, Field(description="Recipients a month the caller may send to through the ESP")]


async def quota(conn: AsyncConnection[Any], user: uuid.UUID, brand: uuid.UUID) -> QuotaOut:
    """The user's monthly limit, what counted against it this calendar month (UTC), and the recipients
    of their unsent campaigns due by its end that will go through the ESP, expanded as they will be; 403
    unless the user is a member of ``brand`` (the quota is the user's, asked for in a brand)."""
    start, end = month_bounds(datetime.now(UTC))
    (now,) = await fetch_rows(conn, QUOTA_NOW, {"user": user, "brand": brand, "start": start, "end": end})
    required(now.role)
    scheduled = 0
    if now.due:
        (row,) = await fetch_rows(conn, SCHEDULED_THROUGH_ESP, {"campaigns": now.due})
        scheduled = int(row[0])
    return {"executed": int(now.executed or 0), "scheduled": scheduled, "quota": int(now.quota or 0)}
