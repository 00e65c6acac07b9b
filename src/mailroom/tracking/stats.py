"""A campaign's statistics: what its counters and its events say, in a few statements."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, cast

from psycopg import AsyncConnection
from pydantic import Field
from sqlalchemy import TextClause, text
from typing_extensions import TypedDict

from mailroom.crm.membership import ROLE_IN_BRAND
from mailroom.db import fetch_rows
from mailroom.errors import NotFound
from mailroom.event_types import EVENT_TYPES
from mailroom.serialize import closed
from mailroom.tracking.settle import ECHO_SECONDS, UNCOUNTED_ECHO, UNCOUNTED_PROXY, UNCOUNTED_SCANNER

PEOPLE = ("opened", "clicked")
# unique: distinct recipients (the campaign's counters); total: every event (the emails' raw numbers).
_COUNT_COLUMNS = "c.sent, c.recipients_count, c.executed_at, " + ", ".join(
    f"c.{t} AS unique_{t}, r.{t} AS total_{t}" for t in EVENT_TYPES
)
# Whether the caller may see the campaign, answered by the statement itself: one round trip, and none of
# the campaign's other columns read only to be dropped.
_CALLER_ROLE = f"({ROLE_IN_BRAND.format(brand='c.brand', user=':user')}) AS caller_role"
_COUNT_SOURCE = (
    "email_campaigns c, LATERAL (SELECT "
    + ", ".join(f"coalesce(sum(m.{t}), 0) AS {t}" for t in EVENT_TYPES)
    + " FROM emails m WHERE m.campaign = c.id) r WHERE c.id = :campaign AND c.deleted_at IS NULL"
)
# Counted opens and clicks only: proxies, scanners and the send's own echo are no one's reading. Grouped by
# hour first and only then measured from sending: the arithmetic runs once an hour, not once an event (on
# 60,000 events it was half the statement's time).
_HOURLY = text(
    """
    SELECT h.hour,
           floor(extract(epoch FROM h.hour - date_trunc('hour', c.executed_at)) / 3600) AS since_sending,
           h.opened, h.clicked
    FROM (
        SELECT date_trunc('hour', e.occurred_at) AS hour,
               count(*) FILTER (WHERE e.type = 'opened') AS opened,
               count(*) FILTER (WHERE e.type = 'clicked') AS clicked
        FROM email_events e
        WHERE e.campaign = :campaign AND e.type IN ('opened', 'clicked') AND e.uncounted IS NULL
        GROUP BY 1
    ) h JOIN email_campaigns c ON c.id = :campaign
    ORDER BY 1
    """
)
_LINKS = text(
    """
    SELECT url, count(DISTINCT recipient) FILTER (WHERE uncounted IS NULL) AS unique, count(*) AS total
    FROM email_events WHERE campaign = :campaign AND type = 'clicked' AND url IS NOT NULL
    GROUP BY url ORDER BY 2 DESC, 3 DESC, url
    """
)
# Failures as the provider reported them, and the sends refused outright (no event: the row's error).
_FAILURES = text(
    """
    WITH failures AS (
        SELECT DISTINCT ON (recipient) recipient, coalesce(reason, severity, 'unknown') AS reason
        FROM email_events WHERE campaign = :campaign AND type = 'failed' AND recipient IS NOT NULL
        ORDER BY recipient, occurred_at DESC
    ), refused AS (
        SELECT email_address AS recipient, error AS reason FROM email_campaign_emails ce
        WHERE ce.campaign = :campaign AND ce.error IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.recipient = ce.email_address)
    ), every AS (SELECT * FROM failures UNION ALL SELECT * FROM refused)
    SELECT 'reason' AS kind, reason AS key, count(*) AS recipients FROM every GROUP BY reason
    UNION ALL
    SELECT 'domain', split_part(recipient, '@', 2), count(*) FROM every GROUP BY 2
    ORDER BY 1, 3 DESC, 2
    """
)


def _as_json_array(statement: TextClause) -> str:
    return f"(SELECT coalesce(json_agg(row_to_json(x)), '[]') FROM ({statement.text}) x)"


# Opens and clicks kept but not counted, by the rule that set each aside (duplicates of stored provider
# events are the same event twice, not a hit anyone made, and are left out).
_SET_ASIDE = text(
    f"""
    SELECT uncounted AS rule, count(*) FILTER (WHERE type = 'opened') AS opened,
           count(*) FILTER (WHERE type = 'clicked') AS clicked
    FROM email_events WHERE campaign = :campaign AND type IN ('opened', 'clicked')
      AND uncounted IN ('{UNCOUNTED_ECHO}', '{UNCOUNTED_PROXY}', '{UNCOUNTED_SCANNER}')
    GROUP BY uncounted
    """
)
# The answer's key for each rule.
SET_ASIDE_RULES = {UNCOUNTED_ECHO: "early", UNCOUNTED_PROXY: "image_proxy", UNCOUNTED_SCANNER: "link_scanner"}

# Every part in one statement: the counters with the three lists beside them as JSON arrays (each
# keeps its own ORDER BY), one round trip where five were.
_STATS = text(
    f"SELECT {_CALLER_ROLE}, {_COUNT_COLUMNS}, {_as_json_array(_HOURLY)} AS hourly, {_as_json_array(_LINKS)} AS links, "
    f"{_as_json_array(_FAILURES)} AS failures, {_as_json_array(_SET_ASIDE)} AS set_aside FROM {_COUNT_SOURCE}"
)


@closed
class EventCountOut(TypedDict):
    unique: Annotated[int, Field(description="Distinct recipients it happened to (the campaign's counter)")]
    total: Annotated[int, Field(description="Every time it happened, summed over the campaign's emails")]


# Written out for the type checker, as CountersOut is; tests/test_event_types.py holds it to EVENT_TYPES.
@closed
class EventCountsOut(TypedDict):
    """Each event type, counted per recipient and in all."""

    accepted: EventCountOut
    rejected: EventCountOut
    delivered: EventCountOut
    failed: EventCountOut
    opened: EventCountOut
    clicked: EventCountOut
    unsubscribed: EventCountOut
    complained: EventCountOut
    stored: EventCountOut


@closed
class HourOut(TypedDict):
    """The counted opens and clicks of one hour (proxies, scanners and the send's own echo left out)."""

    hour: Annotated[str, Field(description="The hour's start, ISO 8601 with its offset")]
    since_sending: Annotated[int, Field(description="Whole hours between the hour sending began in and this one")]
    opened: Annotated[int, Field(description="Counted opens in the hour")]
    clicked: Annotated[int, Field(description="Counted clicks in the hour")]


@closed
class LinkOut(TypedDict):
    """One link of the campaign's emails that was clicked."""

    url: Annotated[str, Field(description="The link as the email held it")]
    unique: Annotated[int, Field(description="Distinct recipients who clicked it (counted clicks)")]
    total: Annotated[int, Field(description="Every click on it, counted or not")]


@closed
class FailureReasonOut(TypedDict):
    reason: Annotated[str, Field(description="What the provider said, or why the send was refused")]
    recipients: Annotated[int, Field(description="Recipients whose latest failure it is")]


@closed
class FailureDomainOut(TypedDict):
    domain: Annotated[str, Field(description="The domain of the failed addresses")]
    recipients: Annotated[int, Field(description="Recipients at it whose mail failed")]


@closed
class FailuresOut(TypedDict):
    """Failed recipients (each once, by their latest failure) grouped two ways, the largest groups first."""

    by_reason: list[FailureReasonOut]
    by_domain: list[FailureDomainOut]


@closed
class SetAsideHitsOut(TypedDict):
    opened: Annotated[int, Field(description="Opens set aside by the rule")]
    clicked: Annotated[int, Field(description="Clicks set aside by the rule")]


@closed
class SetAsideOut(TypedDict):
    """Opens and clicks kept but not counted, by rule: they say nothing about the person."""

    early: Annotated[
        SetAsideHitsOut,
        Field(description=f"Within {ECHO_SECONDS} s of sending: the provider's or receiving server's checks"),
    ]
    image_proxy: Annotated[SetAsideHitsOut, Field(description="Opens fetched by a mail provider's image proxy")]
    link_scanner: Annotated[
        SetAsideHitsOut, Field(description="Clicks on every link of an email within one second: a link scanner")
    ]


@closed
class CampaignStatsOut(TypedDict):
    """What happened to a campaign's emails."""

    sent: Annotated[int, Field(description="Emails actually sent")]
    recipients_count: Annotated[int | None, Field(description="Recipients once the campaign has been expanded")]
    executed_at: Annotated[str | None, Field(description="When sending began, ISO 8601; null before")]
    counts: EventCountsOut
    hourly: Annotated[list[HourOut], Field(description="Hours with a counted open or click, in order")]
    links: Annotated[list[LinkOut], Field(description="Clicked links, those the most recipients clicked first")]
    failures: FailuresOut
    set_aside: SetAsideOut


def _count(row: Any, event_type: str) -> EventCountOut:
    return {"unique": getattr(row, f"unique_{event_type}"), "total": int(getattr(row, f"total_{event_type}"))}


async def campaign_stats(conn: AsyncConnection[Any], campaign: uuid.UUID, user: uuid.UUID) -> CampaignStatsOut:
    """The campaign's figures, if it is live and the user is a member of its brand; otherwise 404, never
    another brand's data."""
    rows = await fetch_rows(conn, _STATS, {"campaign": campaign, "user": user})
    if not rows or rows[0].caller_role is None:
        raise NotFound("no such campaign", field="id")
    row = rows[0]
    # EVENT_TYPES names the keys, in the order the statement's columns were made from it.
    counts = cast(EventCountsOut, {t: _count(row, t) for t in EVENT_TYPES})
    hourly: list[HourOut] = [
        {
            # JSON carries PostgreSQL's timestamp text; the answer keeps Python's ISO 8601 form.
            "hour": datetime.fromisoformat(r["hour"]).isoformat(),
            "since_sending": int(r["since_sending"] or 0),
            "opened": r["opened"],
            "clicked": r["clicked"],
        }
        for r in row.hourly
    ]
    links: list[LinkOut] = [{"url": r["url"], "unique": r["unique"], "total": r["total"]} for r in row.links]
    failures: FailuresOut = {"by_reason": [], "by_domain": []}
    for r in row.failures:
        if r["kind"] == "reason":
            failures["by_reason"].append({"reason": r["key"], "recipients": r["recipients"]})
        else:
            failures["by_domain"].append({"domain": r["key"], "recipients": r["recipients"]})
    set_aside = {key: SetAsideHitsOut(opened=0, clicked=0) for key in SET_ASIDE_RULES.values()}
    for r in row.set_aside:
        set_aside[SET_ASIDE_RULES[r["rule"]]] = {"opened": r["opened"], "clicked": r["clicked"]}
    return {
        "sent": row.sent,
        "recipients_count": row.recipients_count,
        "executed_at": row.executed_at.isoformat() if row.executed_at else None,
        "counts": counts,
        "hourly": hourly,
        "links": links,
        "failures": failures,
        "set_aside": cast(SetAsideOut, set_aside),
    }
