"""What a campaign's report reads of its events beside the stats: each recipient's opens, clicks and
last activity."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

# By message first: ix_email_events_email_type finds a page's 50 messages' events at once, where the
# campaign's index would walk every event of the campaign. Then by recipient row, as a message that
# went to several recipients (a campaign that is not individual) carries the events of each.
# Opens and clicks as the stats count them: those set aside are no one's reading.
_ACTIVITY = """
    SELECT campaign_email, max(occurred_at),
           count(*) FILTER (WHERE type = 'opened' AND uncounted IS NULL),
           count(*) FILTER (WHERE type = 'clicked' AND uncounted IS NULL)
    FROM email_events
    WHERE email = ANY(%(emails)s) AND campaign_email = ANY(%(rows)s) AND type <> 'accepted'
    GROUP BY campaign_email
"""


@dataclass(frozen=True, slots=True)
class Activity:
    last: datetime
    opens: int
    clicks: int


async def recipient_activity(
    conn: AsyncConnection[Any], rows: Sequence[tuple[uuid.UUID, uuid.UUID | None]]
) -> dict[uuid.UUID, Activity]:
    """For each (recipient row id, message id) the counted opens and clicks and when anything last
    happened (delivery, an open, a click, a failure...), by row id; a row with no message, or none of
    whose events came after handing it over, is left out."""
    sent = [(row, email) for row, email in rows if email is not None]
    if not sent:
        return {}
    params = {"rows": [row for row, _ in sent], "emails": list({email for _, email in sent})}
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(_ACTIVITY, params)
        return {row: Activity(last, opens, clicks) for row, last, opens, clicks in await cursor.fetchall()}
