"""Telling a campaign's sender that a recipient opened or clicked.

A click is told at once, one notification each. Opens are grouped per sender, campaign and
recipient: an open within 5 minutes of that recipient's previous open adds to the same notification
(``count`` and ``updated_at``) instead of making a new one, so a sender sees at most one open
notification per recipient of a campaign in any 5 minutes. Nothing is told when the campaign's
``notifications_enabled`` is off, when it was executed more than 30 days ago, or when the recipient
is the sender (their own address, or the mailbox the campaign went out through), nor when the
recipient is not known (neither given nor found from the campaign email).

A notification's ``created_at`` is when the first activity it tells of happened and ``updated_at``
when the latest did, so grouping follows the recipient's clock and not the time events are settled.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from psycopg import AsyncConnection
from pydantic import Field
from sqlalchemy import TextClause, func, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import TypedDict

from mailroom.db import fetch_rows
from mailroom.errors import NotFound
from mailroom.serialize import closed, epoch
from mailroom.tracking.activity import SettledActivity
from mailroom.tracking.models import Notification, NotificationKind

OPENS_APART = "5 minutes"
CAMPAIGN_AGE = "30 days"


# One statement for the whole batch: the eligible activity is found once, opens are grouped into
# sessions (a gap over 5 minutes starts a new one) together with each key's latest existing open
# notification, sessions that reach an existing notification bump it (the one UPDATE) and the rest,
# with every click, are inserted (the one INSERT ... SELECT). ``activity`` is a SELECT of
# (type, campaign, campaign_email, recipient, url, occurred_at).
def _notify_sql(activity: str) -> str:
    return f"""
    WITH activity AS ({activity}),
    -- The recipient's row is found by its id or, without one, by the address: two plain joins the
    -- planner can hash, where one OR-join would compare every pair.
    located AS (
        SELECT a.*, coalesce(by_id.id, by_address.id) AS row_id,
               lower(btrim(coalesce(a.recipient, by_id.email_address))) AS address
        FROM activity a
        LEFT JOIN email_campaign_emails by_id ON by_id.id = a.campaign_email AND by_id.campaign = a.campaign
        LEFT JOIN email_campaign_emails by_address ON a.campaign_email IS NULL
             AND by_address.campaign = a.campaign AND by_address.email_address = lower(btrim(a.recipient))
        WHERE a.type IN ('opened', 'clicked')
    ),
    eligible AS (
        SELECT a.type, a.campaign, a.row_id AS campaign_email, a.url, a.occurred_at, c."from" AS "user", c.brand,
               a.address AS recipient
        FROM located a
        JOIN email_campaigns c ON c.id = a.campaign
        JOIN users u ON u.id = c."from"
        LEFT JOIN google_credentials g ON g.id = c.google_credential
        LEFT JOIN microsoft_credentials m ON m.id = c.microsoft_credential
        WHERE c.notifications_enabled AND c.deleted_at IS NULL AND u.deleted_at IS NULL
          AND c.executed_at > now() - interval '{CAMPAIGN_AGE}'
          AND a.address NOT IN (lower(u.email), lower(coalesce(g.email, '')), lower(coalesce(m.email, '')))
    ),
    opens AS (SELECT * FROM eligible WHERE type = 'opened'),
    keys AS (
        SELECT "user", campaign, recipient, min(occurred_at) AS first_at FROM opens GROUP BY 1, 2, 3
    ),
    -- The latest open notification of each key that the batch's opens can still reach.
    seeds AS (
        SELECT DISTINCT ON (n."user", n.campaign, n.recipient)
               n.id, n."user", n.campaign, n.recipient, n.created_at, coalesce(n.updated_at, n.created_at) AS last_at
        FROM notifications n
        JOIN keys k ON n."user" = k."user" AND n.campaign = k.campaign AND n.recipient = k.recipient
        WHERE n.type = 'opened' AND coalesce(n.updated_at, n.created_at) >= k.first_at - interval '{OPENS_APART}'
        ORDER BY n."user", n.campaign, n.recipient, n.created_at DESC
    ),
    timeline AS (
        SELECT "user", campaign, recipient, occurred_at AS at, NULL::uuid AS seed, 1 AS opens, campaign_email, brand
        FROM opens
        UNION ALL
        SELECT "user", campaign, recipient, created_at, id, 0, NULL, NULL FROM seeds
        UNION ALL
        SELECT "user", campaign, recipient, last_at, id, 0, NULL, NULL FROM seeds
    ),
    starts AS (
        SELECT *, CASE WHEN at - lag(at) OVER w <= interval '{OPENS_APART}' THEN 0 ELSE 1 END AS starts
        FROM timeline
        WINDOW w AS (PARTITION BY "user", campaign, recipient ORDER BY at, opens)
    ),
    sessions AS (
        SELECT *, sum(starts) OVER (
            PARTITION BY "user", campaign, recipient ORDER BY at, opens ROWS UNBOUNDED PRECEDING) AS session
        FROM starts
    ),
    grouped AS (
        SELECT "user", campaign, recipient,
               (array_agg(seed) FILTER (WHERE seed IS NOT NULL))[1] AS seed,
               sum(opens)::integer AS opens,
               min(at) FILTER (WHERE opens = 1) AS first_at,
               max(at) FILTER (WHERE opens = 1) AS last_at,
               (array_agg(campaign_email) FILTER (WHERE campaign_email IS NOT NULL))[1] AS campaign_email,
               (array_agg(brand) FILTER (WHERE brand IS NOT NULL))[1] AS brand
        FROM sessions
        GROUP BY "user", campaign, recipient, session
        HAVING sum(opens) > 0
    ),
    bumped AS (
        UPDATE notifications n
        SET count = n.count + g.opens, updated_at = greatest(coalesce(n.updated_at, n.created_at), g.last_at)
        FROM (SELECT seed, sum(opens)::integer AS opens, max(last_at) AS last_at
              FROM grouped WHERE seed IS NOT NULL GROUP BY seed) g
        WHERE n.id = g.seed
        RETURNING n.id
    ),
    inserted AS (
        INSERT INTO notifications
            ("user", brand, campaign, campaign_email, type, recipient, url, count, created_at, updated_at)
        SELECT "user", brand, campaign, campaign_email, 'opened', recipient, NULL, opens, first_at, last_at
        FROM grouped WHERE seed IS NULL
        UNION ALL
        SELECT "user", brand, campaign, campaign_email, 'clicked', recipient, url, 1, occurred_at, occurred_at
        FROM eligible WHERE type = 'clicked'
        RETURNING id
    )
    SELECT (SELECT count(*) FROM bumped) + (SELECT count(*) FROM inserted)
    """


# Two settlers grouping opens of one campaign at once would each miss the other's new notification
# and both insert: the later one waits here until the earlier commits, then sees it. Campaigns are
# locked in one order so two lists never deadlock.
def _lock_sql(activity: str) -> str:
    return (
        "SELECT pg_advisory_xact_lock(hashtextextended(CAST(campaign AS text), 11)) "
        f"FROM (SELECT DISTINCT campaign FROM ({activity}) AS a WHERE type = 'opened' ORDER BY campaign) AS c"
    )


@dataclass(frozen=True, slots=True)
class ActivitySource:
    """Where notify_from() reads the counted opens and clicks: its two statements (activity_source())."""

    lock: TextClause
    notify: TextClause


def activity_source(activity: str) -> ActivitySource:
    """The statements for a SELECT of (type, campaign, campaign_email, recipient, url, occurred_at)."""
    return ActivitySource(text(_lock_sql(activity)), text(_notify_sql(activity)))


# A list of activities passed as arrays (notify()).
_GIVEN = activity_source(
    "SELECT * FROM unnest(CAST(:type AS text[]), CAST(:campaign AS uuid[]), CAST(:campaign_email AS uuid[]), "
    "CAST(:recipient AS text[]), CAST(:url AS text[]), CAST(:occurred_at AS timestamptz[])) "
    "AS a(type, campaign, campaign_email, recipient, url, occurred_at)"
)


async def notify_from(session: AsyncSession, source: ActivitySource, params: dict[str, Any] | None = None) -> int:
    """Tell the senders about the source's counted opens and clicks, in the caller's transaction.

    Answers how many notifications were created or added to: one statement however many there are,
    after one that waits for another transaction grouping opens of the same campaigns.
    """
    await session.execute(source.lock, params or {})
    return int(await session.scalar(source.notify, params or {}) or 0)


async def notify(session: AsyncSession, activity: Sequence[SettledActivity]) -> int:
    """notify_from() for a list of counted opens and clicks."""
    if not activity:
        return 0
    return await notify_from(
        session,
        _GIVEN,
        {
            "type": [a.type for a in activity],
            "campaign": [a.campaign for a in activity],
            "campaign_email": [a.campaign_email for a in activity],
            "recipient": [a.recipient for a in activity],
            "url": [a.url for a in activity],
            "occurred_at": [a.occurred_at for a in activity],
        },
    )


# The total rides along as a window count; a page past the end counts on its own.
NOTIFICATIONS_PAGE = text(
    """
    SELECT id, type, campaign, recipient, url, count, created_at, updated_at, seen_at, count(*) OVER () AS total
    FROM notifications WHERE "user" = :user ORDER BY created_at DESC, id DESC OFFSET :start LIMIT :limit
    """
)
NOTIFICATIONS_COUNT = text('SELECT count(*) AS total FROM notifications WHERE "user" = :user')


async def list_notifications(
    conn: AsyncConnection[Any], *, user: uuid.UUID, start: int, limit: int
) -> tuple[list[Any], int]:
    """One page of the user's notifications, newest first, and the number of all of them."""
    rows = await fetch_rows(conn, NOTIFICATIONS_PAGE, {"user": user, "start": start, "limit": limit})
    if rows:
        return rows, int(rows[0].total)
    return [], int((await fetch_rows(conn, NOTIFICATIONS_COUNT, {"user": user}))[0].total)


async def mark_seen(session: AsyncSession, *, user: uuid.UUID, notification: uuid.UUID) -> Notification:
    """Mark one of the user's notifications seen (the first time counts); 404 for anyone else's."""
    row = await session.scalar(
        update(Notification)
        .where(Notification.id == notification, Notification.user == user)
        .values(seen_at=func.coalesce(Notification.seen_at, func.now()))
        .returning(Notification)
        .execution_options(synchronize_session=False)
    )
    if row is None:
        raise NotFound("no such notification", field="id")
    return row


@closed
class NotificationOut(TypedDict):
    """A recipient of the caller's campaign opened or clicked."""

    type: Literal["notification"]
    id: uuid.UUID
    kind: Annotated[
        NotificationKind,
        Field(description="clicked: one per click; opened: a recipient's opens less than 5 minutes apart"),
    ]
    campaign: uuid.UUID | None
    recipient: Annotated[str | None, Field(description="The recipient's address")]
    url: Annotated[str | None, Field(description="The link clicked; null for opens")]
    count: Annotated[int, Field(description="How many opens or clicks it tells of")]
    created_at: Annotated[float, Field(description="When the first of them happened, in epoch seconds")]
    updated_at: Annotated[float | None, Field(description="When the latest of them happened, in epoch seconds")]
    seen_at: Annotated[
        float | None, Field(description="When the caller marked it seen, in epoch seconds; null until then")
    ]


def notification_out(row: Any) -> NotificationOut:
    """A Notification, or a row of NOTIFICATIONS_PAGE."""
    return {
        "type": "notification",
        "id": row.id,
        "kind": row.type,
        "campaign": row.campaign,
        "recipient": row.recipient,
        "url": row.url,
        "count": row.count,
        "created_at": epoch(row.created_at),
        "updated_at": epoch(row.updated_at),
        "seen_at": epoch(row.seen_at),
    }
