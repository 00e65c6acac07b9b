"""Tracking hits (pixel opens, tracked clicks) appended as events, a batch of them per statement.

A shared message (one emails row for many recipients) cannot tell who opened or clicked: its events
name the email and campaign, and carry ``campaign_email`` and ``recipient`` only when the email has
exactly one recipient row (individual sends). A click's target is the link the email held at that
position (``emails.links``), never anything the request says.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailroom.tracking.events import QUEUE_APPENDED

MAX_USER_AGENT = 500


@dataclass(frozen=True, slots=True)
class Hit:
    type: Literal["opened", "clicked"]
    email: uuid.UUID
    link_index: int | None = None  # clicks: the link's position in the email, from 0
    user_agent: str | None = None
    ip: str | None = None


# One statement for the whole batch: append the hits of emails that exist (and, for clicks, of links
# they hold), and answer each hit's link (clicks) or '' (opens); no row for a hit on nothing.
RECORD_HITS = text(
    f"""
    WITH h AS (
        SELECT * FROM jsonb_to_recordset(CAST(:hits AS jsonb))
               AS h(n integer, type text, email uuid, link_index integer, user_agent text, ip text)
    ), found AS (
        SELECT h.n, h.type, h.email, h.link_index, h.user_agent, h.ip, e.campaign, c.brand,
               r.id AS campaign_email, r.address,
               CASE WHEN h.type = 'clicked' THEN e.links[h.link_index + 1] END AS url
        FROM h
        JOIN emails e ON e.id = h.email
        LEFT JOIN email_campaigns c ON c.id = e.campaign
        LEFT JOIN LATERAL (
            SELECT CASE WHEN count(*) = 1 THEN (array_agg(x.id))[1] END AS id,
                   CASE WHEN count(*) = 1 THEN (array_agg(x.email_address))[1] END AS address
            FROM (SELECT id, email_address FROM email_campaign_emails WHERE email = e.id LIMIT 2) x
        ) r ON true
        WHERE h.type = 'opened' OR e.links[h.link_index + 1] IS NOT NULL
    ), appended AS (
        INSERT INTO email_events (type, source, brand, campaign, email, campaign_email, recipient, url, link_index,
                                  user_agent, ip)
        SELECT type, CASE type WHEN 'opened' THEN 'pixel' ELSE 'click' END, brand, campaign, email,
               campaign_email, address, url, CASE WHEN type = 'clicked' THEN link_index END, user_agent, ip
        FROM found
        RETURNING id, created_at
    ), queued AS (
        {QUEUE_APPENDED}
    )
    SELECT n, coalesce(url, '') AS url FROM found
    """
)


async def record_hits(db: AsyncConnection, hits: Sequence[Hit]) -> list[str | None]:
    """Per hit: the link to redirect to (clicks), '' (an open of a known email), or None (nothing there)."""
    # One JSON document for the batch: orjson encodes it for a fraction of binding six typed arrays.
    rows = [
        {
            "n": n,
            "type": h.type,
            "email": h.email,
            "link_index": h.link_index or 0,
            "user_agent": h.user_agent[:MAX_USER_AGENT] if h.user_agent else None,
            "ip": h.ip,
        }
        for n, h in enumerate(hits)
    ]
    answer = await db.execute(RECORD_HITS, {"hits": orjson.dumps(rows).decode()})
    found: dict[int, str] = {n: url for n, url in answer.all()}
    return [found.get(n) for n in range(len(hits))]
