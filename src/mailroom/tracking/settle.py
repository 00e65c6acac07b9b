"""Counting appended events: batches of them, set-based, exact under concurrent settlers.

Events are appended by webhooks and tracking hits without touching any counter (tracking.events).
Each appended event is queued in ``unsettled_events``. A settler claims a batch of the queue (FOR
UPDATE SKIP LOCKED, so settlers never share one), deletes it and, in the same transaction:

- adds every event to the raw numbers of its ``emails`` row;
- moves the distinct-recipient counters of ``email_campaign_emails`` from 0 to 1 with a conditional
  UPDATE (``WHERE opened = 0``), and the campaign's counters by the number of rows that moved. The
  condition is re-checked on the latest row version, so two settlers can never both count a person;
- keeps opens and clicks that are not a person's (see ``UNCOUNTED``) as events but counts no person;
- suppresses unsubscribes, complaints, permanent failures and repeated temporary failures.

Rows are locked in id order (emails, campaign emails, campaigns) before any counter moves, so
settlers working on the same campaign wait for each other instead of deadlocking. A batch that still
fails (say, a deadlock with the sender) rolls back whole and is claimed again on the next turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.event_types import EVENT_TYPES
from mailroom.tracking.events import BY_INDEX
from mailroom.tracking.notifications import activity_source, notify_from

log = logging.getLogger(__name__)

# Opens and clicks this soon after sending are the provider's or the receiving server's own checks.
# Events per settling transaction: a batch takes about a second, so counters trail the last event by
# about that much, and no transaction holds the counters' rows for long.
BATCH = 5000
ECHO_SECONDS = 30
# An open fetched by a mail provider's image proxy says nothing about the person: Gmail
# (GoogleImageProxy, via ggpht.com) and Yahoo fetch on the provider's servers, and Apple Mail Privacy
# Protection prefetches every image through Apple's proxy with a bare "Mozilla/5.0" user agent, which
# no real mail client or browser sends without platform details.
IMAGE_PROXY_PATTERN = r"(GoogleImageProxy|ggpht\.com|YahooMailProxy|^Mozilla/5\.0$)"
# A link scanner follows every link of the email within the same second; with fewer than 2 links a
# person and a scanner cannot be told apart, so the rule needs at least this many.
SCANNER_MIN_LINKS = 2
TEMPORARY_FAILURES_TO_SUPPRESS = 3
TEMPORARY_FAILURE_DAYS = 7
UNCOUNTED_ECHO = "within 30 seconds of sending"
UNCOUNTED_PROXY = "image proxy"
UNCOUNTED_SCANNER = "link scanner"
UNCOUNTED_DUPLICATE = "duplicate of an event already stored"
# An unsubscribe through our own link suppressed and tagged when its request was answered, and may have
# been undone since: settling it counts it, and suppresses nothing again.
UNSUBSCRIBE_LINK = "unsubscribe"

# Per-connection scratch for the claimed batch; emptied at each commit.
_SCRATCH = text(
    """
    CREATE TEMP TABLE IF NOT EXISTS settling (
        id bigint, created_at timestamptz, occurred_at timestamptz, type text, severity text, brand uuid,
        campaign uuid, email uuid, campaign_email uuid, recipient text, url text, user_agent text,
        reason text, uncounted text, provider_event_id text, source text
    ) ON COMMIT DELETE ROWS
    """
)
_COLUMNS = (
    "id, created_at, occurred_at, type, severity, brand, campaign, email, campaign_email, recipient, url, "
    "user_agent, reason, uncounted, provider_event_id, source"
)
_CLAIM = text(
    f"""
    WITH claimed AS (
        DELETE FROM unsettled_events WHERE id IN (
            SELECT id FROM unsettled_events ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
        )
        RETURNING id, created_at
    )
    INSERT INTO settling ({_COLUMNS})
    SELECT ev.id, ev.created_at, ev.occurred_at, ev.type, ev.severity, ev.brand, ev.campaign, ev.email,
           ev.campaign_email, lower(btrim(ev.recipient)), ev.url, ev.user_agent, ev.reason, ev.uncounted,
           ev.provider_event_id, ev.source
    FROM claimed c CROSS JOIN LATERAL (
        SELECT * FROM email_events ev WHERE ev.id = c.id AND ev.created_at = c.created_at {BY_INDEX}
    ) ev
    """
)
# A provider may post one event twice (a retried webhook): only the first stored copy counts, at every level.
_DROP_DUPLICATES = text(
    """
    DELETE FROM settling s WHERE s.id IN (
        SELECT b.id FROM settling b CROSS JOIN LATERAL (
            -- The copies are found by their id alone; a condition on e.id here let the planner AND in
            -- a scan of every earlier event's key.
            SELECT count(*) FILTER (WHERE e.id < b.id) AS n FROM email_events e
            WHERE e.provider_event_id = b.provider_event_id
        ) earlier
        WHERE b.provider_event_id IS NOT NULL AND earlier.n > 0
    )
    RETURNING s.id
    """
)
# Why an open or click is not a person's; the first rule that applies is the one recorded.
_JUDGE = text(
    f"""
    UPDATE settling s SET uncounted = CASE
        WHEN m.sent_at IS NOT NULL AND s.occurred_at < m.sent_at + make_interval(secs => {ECHO_SECONDS})
            THEN '{UNCOUNTED_ECHO}'
        WHEN s.type = 'opened' AND s.user_agent ~* :proxy THEN '{UNCOUNTED_PROXY}'
        WHEN s.type = 'clicked' AND d.links >= {SCANNER_MIN_LINKS} AND (
            SELECT count(DISTINCT e.url) FROM email_events e
            WHERE e.email = s.email AND e.type = 'clicked' AND e.recipient IS NOT DISTINCT FROM s.recipient
              AND date_trunc('second', e.occurred_at) = date_trunc('second', s.occurred_at)
        ) >= d.links THEN '{UNCOUNTED_SCANNER}'
    END
    FROM emails m, LATERAL (SELECT count(DISTINCT u) AS links FROM unnest(m.links) u) d
    WHERE m.id = s.email AND s.type IN ('opened', 'clicked') AND s.uncounted IS NULL
    """
)
_UNCOUNTED = text("SELECT uncounted, array_agg(id) FROM settling WHERE uncounted IS NOT NULL GROUP BY uncounted")
# By a list of ids rather than a join with the batch, for the same reason as events.BY_INDEX.
_RECORD_UNCOUNTED = text(
    "UPDATE email_events SET uncounted = :reason WHERE id = ANY(CAST(:ids AS bigint[])) AND uncounted IS NULL"
)
_LOCK = {
    table: text(
        f"SELECT 1 FROM {table} WHERE id IN (SELECT {column} FROM settling WHERE {column} IS NOT NULL) "
        "ORDER BY id FOR UPDATE"
    )
    for table, column in (
        ("emails", "email"),
        ("email_campaign_emails", "campaign_email"),
        ("email_campaigns", "campaign"),
    )
}
# Raw numbers: every event counts. ``accepted`` is the exception: the row is already accepted when
# the send succeeded, and the provider's accepted event says the same thing again.
_RAW = text(
    "UPDATE emails m SET "
    + ", ".join(
        "accepted = CASE WHEN a.accepted > 0 THEN greatest(m.accepted, 1) ELSE m.accepted END"
        if t == "accepted"
        else f"{t} = m.{t} + a.{t}"
        for t in EVENT_TYPES
    )
    + " FROM (SELECT email, "
    + ", ".join(f"count(*) FILTER (WHERE type = '{t}') AS {t}" for t in EVENT_TYPES)
    + " FROM settling WHERE email IS NOT NULL GROUP BY email) a WHERE m.id = a.email"
)
# Distinct recipients, one statement per event type present in the batch: the 0 -> 1 moves of the
# campaign email rows, and the campaign's counters by their number.
_DISTINCT = {
    t: text(
        f"""
        WITH moved AS (
            UPDATE email_campaign_emails ce SET {t} = 1
            WHERE ce.{t} = 0 AND ce.id IN (
                SELECT campaign_email FROM settling
                WHERE type = '{t}' AND uncounted IS NULL AND campaign_email IS NOT NULL
            )
            RETURNING ce.campaign
        )
        UPDATE email_campaigns c SET {t} = c.{t} + m.n
        FROM (SELECT campaign, count(*) AS n FROM moved GROUP BY campaign) m WHERE c.id = m.campaign
        """
    )
    for t in EVENT_TYPES
}
_CAMPAIGN_EMAIL_UNCOUNTED = text(
    """
    UPDATE email_campaign_emails ce SET uncounted = s.uncounted
    FROM (
        SELECT DISTINCT ON (campaign_email) campaign_email, uncounted FROM settling
        WHERE uncounted IS NOT NULL AND campaign_email IS NOT NULL ORDER BY campaign_email, id DESC
    ) s
    WHERE ce.id = s.campaign_email
    """
)
_SUPPRESS = text(
    f"""
    INSERT INTO suppressions (brand, email, reason, detail)
    SELECT DISTINCT ON (brand, recipient) brand, recipient,
           CASE type WHEN 'failed' THEN 'bounced' ELSE type END, reason
    FROM settling s
    WHERE brand IS NOT NULL AND recipient IS NOT NULL AND recipient <> '' AND (
        (type = 'unsubscribed' AND source <> '{UNSUBSCRIBE_LINK}') OR type = 'complained'
        OR (type = 'failed' AND severity = 'permanent')
        OR (type = 'failed' AND severity = 'temporary' AND (
            SELECT count(*) FROM email_events e
            WHERE e.brand = s.brand AND e.recipient = s.recipient AND e.type = 'failed'
              AND e.severity = 'temporary'
              AND e.occurred_at > now() - make_interval(days => {TEMPORARY_FAILURE_DAYS})
        ) >= {TEMPORARY_FAILURES_TO_SUPPRESS})
    )
    ORDER BY brand, recipient, (type = 'unsubscribed') DESC, id
    ON CONFLICT (brand, email) DO NOTHING
    """
)
_TAG_UNSUBSCRIBED = text(
    f"""
    UPDATE contacts c SET tags = array_append(c.tags, 'Unsubscribed'), updated_at = now()
    FROM (
        SELECT DISTINCT brand, recipient FROM settling
        WHERE type = 'unsubscribed' AND source <> '{UNSUBSCRIBE_LINK}' AND brand IS NOT NULL
    ) u
    WHERE c.brand = u.brand AND c.deleted_at IS NULL AND mailroom_lower_array(c.emails) @> ARRAY[u.recipient]
      AND NOT coalesce(mailroom_lower_array(c.tags), '{{}}') @> ARRAY['unsubscribed']
    """
)
# The batch's opens and clicks counted as a person's, told to the senders of campaigns that notify.
# Read where they are, in the scratch table: handing them to notify() as arrays cost the settler 70 ms
# of 330 ms per 3,000 events, more than the telling itself.
_TO_NOTIFY = activity_source(
    "SELECT s.type, s.campaign, s.campaign_email, s.recipient, s.url, s.occurred_at FROM settling s "
    "JOIN email_campaigns c ON c.id = s.campaign AND c.notifications_enabled "
    "WHERE s.type IN ('opened', 'clicked') AND s.uncounted IS NULL AND s.campaign_email IS NOT NULL"
)
_PURGE_TOKENS = text("DELETE FROM webhook_tokens WHERE created_at < now() - interval '30 minutes'")


async def settle_once(session: AsyncSession, *, limit: int = BATCH) -> int:
    """Count one batch of unsettled events in the session's transaction; return how many were claimed."""
    await session.execute(_SCRATCH)
    claimed = (await session.execute(_CLAIM, {"limit": limit})).rowcount  # type: ignore[attr-defined]
    if not claimed:
        return 0
    uncounted = {UNCOUNTED_DUPLICATE: list((await session.execute(_DROP_DUPLICATES)).scalars())}
    await session.execute(_JUDGE, {"proxy": IMAGE_PROXY_PATTERN})
    uncounted.update((reason, ids) for reason, ids in (await session.execute(_UNCOUNTED)).all())
    for reason, ids in uncounted.items():
        if ids:
            await session.execute(_RECORD_UNCOUNTED, {"reason": reason, "ids": ids})
    for lock in _LOCK.values():
        await session.execute(lock)
    await session.execute(_RAW)
    present = set((await session.execute(text("SELECT DISTINCT type FROM settling WHERE uncounted IS NULL"))).scalars())
    for event_type in sorted(present):
        await session.execute(_DISTINCT[event_type])
    await session.execute(_CAMPAIGN_EMAIL_UNCOUNTED)
    # Most batches are deliveries, opens and clicks: the suppression statements (a sort of the whole
    # batch, 0.9 s of 3.4 s for 20,000 events) only run for a batch that can suppress.
    if present & {"unsubscribed", "complained", "failed"}:
        await session.execute(_SUPPRESS)
    if "unsubscribed" in present:
        await session.execute(_TAG_UNSUBSCRIBED)
    await notify_from(session, _TO_NOTIFY)
    return int(claimed)


def _month(day: date, ahead: int) -> date:
    index = day.year * 12 + day.month - 1 + ahead
    return date(index // 12, index % 12 + 1, 1)


async def ensure_partitions(session: AsyncSession, *, today: date | None = None, months: int = 2) -> list[str]:
    """Create the monthly partitions of the next ``months`` months that are missing; return their names.

    Created two months ahead, so rows rarely land in the default partition. When they have (the
    settler was down for months), they are moved into the new partition in the same transaction:
    attaching a partition whose range still has rows in the default one would fail.
    """
    today = today or datetime.now(UTC).date()
    created = []
    for ahead in range(months + 1):
        lo, hi = _month(today, ahead), _month(today, ahead + 1)
        name = f"email_events_{lo:%Y_%m}"
        exists = (await session.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name})).scalar_one()
        if exists:
            continue
        bounds = {"lo": lo.isoformat(), "hi": hi.isoformat()}
        await session.execute(text(f"CREATE TABLE {name} (LIKE email_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
        await session.execute(
            text(
                f"WITH moved AS (DELETE FROM email_events_default WHERE created_at >= CAST(:lo AS timestamptz) "
                f"AND created_at < CAST(:hi AS timestamptz) RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            ),
            bounds,
        )
        await session.execute(
            text(f"ALTER TABLE email_events ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')")
        )
        created.append(name)
    return created


async def upkeep(session: AsyncSession) -> None:
    """Hourly: the next months' partitions."""
    for name in await ensure_partitions(session):
        log.info("created events partition %s", name)


async def purge_tokens(session: AsyncSession) -> None:
    """Webhook tokens older than 30 minutes: a signature older than 15 is refused as stale anyway."""
    await session.execute(_PURGE_TOKENS)


async def run_settler(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    interval: float = 0.5,
    upkeep_every: float = 3600.0,
    purge_every: float = 60.0,
) -> None:
    """Settle events until cancelled: full batches back to back while a backlog lasts, else every ``interval`` s.

    Part of a batch's cost is per statement, not per event: settling whatever trickled in since the
    last batch, again and again, cost a third more per event (measured: 147 µs per event in batches
    of 300, 112 µs in batches of 3,000) than waiting ``interval`` for more.
    """
    next_upkeep = next_purge = 0.0
    while True:
        claimed = 0
        try:
            if time.monotonic() >= next_upkeep:
                async with sessionmaker() as session, session.begin():
                    await upkeep(session)
                next_upkeep = time.monotonic() + upkeep_every
            if time.monotonic() >= next_purge:
                async with sessionmaker() as session, session.begin():
                    await purge_tokens(session)
                next_purge = time.monotonic() + purge_every
            async with sessionmaker() as session, session.begin():
                claimed = await settle_once(session)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The batch rolled back and stays unsettled: it is claimed again on the next turn.
            log.exception("settling events failed; retrying")
            await asyncio.sleep(interval)
            continue
        if claimed < BATCH:
            await asyncio.sleep(interval)
