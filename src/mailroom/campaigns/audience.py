"""Expanding a campaign's recipient items into the addresses it goes to: one set-based statement.

Each recipient type is its own branch of a UNION ALL so that every branch can use its index (the tag
GIN index, list membership, the brand's contacts) instead of one OR-join the planner cannot split.
Addresses are compared lower-cased and trimmed; To wins over CC, CC over BCC; a contact tagged
Unsubscribed and a suppressed address are left out.

The monthly count of mail sent through the ESP lives here too: the sender checks it when it executes a
campaign, and the campaigns API shows it. Both are the campaigns' own rules over their own rows and the
CRM's, which the sender, a layer above, runs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.mailboxes.access import LIMITS

# A campaign that is not individual goes out as one message To/Cc/Bcc up to this many recipients;
# from this many on it is sent one message per recipient.
SHARED_MESSAGE_LIMIT = 1000

# To wins over CC, CC over BCC: the order both deduplication and message positions follow.
SEND_TYPE_RANK = "CASE send_type WHEN 'To' THEN 0 WHEN 'CC' THEN 1 ELSE 2 END"

# :campaigns is an array of campaign ids; each row is one (campaign, address) to send to.
EXPANSION_CTE = f"""
items AS (
    SELECT r.*, c.brand AS campaign_brand
    FROM email_campaign_recipients r
    JOIN email_campaigns c ON c.id = r.campaign
    WHERE r.campaign = ANY(CAST(:campaigns AS uuid[])) AND r.deleted_at IS NULL
),
brand_tree AS (
    -- Brand recipients reach the Agent-role users of the brand and of every brand below it.
    WITH RECURSIVE tree(item, brand, depth) AS (
        SELECT i.id, i.brand, 0 FROM items i WHERE i.recipient_type = 'Brand'
        UNION ALL
        SELECT t.item, b.id, t.depth + 1 FROM tree t JOIN brands b ON b.parent = t.brand AND b.deleted_at IS NULL
        WHERE t.depth < 32
    )
    SELECT item, brand FROM tree
),
candidates(campaign, brand, address, send_type, contact, agent) AS (
    SELECT i.campaign, i.campaign_brand, i.email, i.send_type,
           coalesce(i.contact, (
               SELECT c.id FROM contacts c
               WHERE c.brand = i.campaign_brand AND c.deleted_at IS NULL
                 AND mailroom_lower_array(c.emails) @> ARRAY[lower(btrim(i.email))]
               ORDER BY c.created_at LIMIT 1)),
           NULL::uuid
    FROM items i WHERE i.recipient_type = 'Email'
  UNION ALL
    SELECT i.campaign, i.campaign_brand, c.emails[1], i.send_type, c.id, NULL
    FROM items i JOIN contacts c ON c.id = i.contact AND c.deleted_at IS NULL
    WHERE i.recipient_type = 'Contact'
  UNION ALL
    SELECT i.campaign, i.campaign_brand, e.address, i.send_type, c.id, NULL
    FROM items i
    JOIN crm_list_members m ON m.list = i.list
    JOIN contacts c ON c.id = m.contact AND c.brand = i.campaign_brand AND c.deleted_at IS NULL AND NOT c.parked
    CROSS JOIN LATERAL (VALUES (c.emails[1]), (c.partner_email)) AS e(address)
    WHERE i.recipient_type = 'List'
  UNION ALL
    SELECT i.campaign, i.campaign_brand, e.address, i.send_type, c.id, NULL
    FROM items i
    JOIN contacts c ON c.brand = i.campaign_brand AND c.deleted_at IS NULL AND NOT c.parked
         AND mailroom_lower_array(c.tags) @> ARRAY[lower(btrim(i.tag))]
    CROSS JOIN LATERAL (VALUES (c.emails[1]), (c.partner_email)) AS e(address)
    WHERE i.recipient_type = 'Tag'
  UNION ALL
    SELECT i.campaign, i.campaign_brand, e.address, i.send_type, c.id, NULL
    FROM items i
    JOIN contacts c ON c.brand = i.campaign_brand AND c.deleted_at IS NULL AND NOT c.parked
    CROSS JOIN LATERAL (VALUES (c.emails[1]), (c.partner_email)) AS e(address)
    WHERE i.recipient_type = 'AllContacts'
  UNION ALL
    SELECT i.campaign, i.campaign_brand, u.email, i.send_type, NULL, NULL
    FROM items i
    JOIN brand_tree t ON t.item = i.id
    JOIN brand_members m ON m.brand = t.brand AND m.role = 'Agent'
    JOIN users u ON u.id = m.user AND u.deleted_at IS NULL
  UNION ALL
    SELECT i.campaign, i.campaign_brand, a.email, i.send_type, NULL, a.id
    FROM items i JOIN agents a ON a.id = i.agent
    WHERE i.recipient_type = 'Agent'
),
ranked AS (
    SELECT campaign, brand, lower(btrim(address)) AS address, send_type, contact, agent,
           row_number() OVER (
               PARTITION BY campaign, lower(btrim(address))
               ORDER BY {SEND_TYPE_RANK}, contact NULLS LAST
           ) AS rank
    FROM candidates
    WHERE address IS NOT NULL AND btrim(address) <> ''
),
unsubscribed AS (
    SELECT DISTINCT c.brand, unnest(mailroom_lower_array(c.emails)) AS address
    FROM contacts c
    WHERE c.brand IN (SELECT DISTINCT campaign_brand FROM items) AND c.deleted_at IS NULL
      AND mailroom_lower_array(c.tags) @> ARRAY['unsubscribed']
),
expanded AS (
    SELECT r.campaign, r.address, r.send_type, r.contact, r.agent
    FROM ranked r
    WHERE r.rank = 1
      AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.brand = r.brand AND s.email = r.address)
      AND NOT EXISTS (SELECT 1 FROM unsubscribed u WHERE u.brand = r.brand AND u.address = r.address)
)
"""


def through_esp(campaign: str, recipients: str) -> str:
    """SQL true when the campaign (a table alias) with that many recipients goes out through the ESP.

    The route the sender takes (Mailboxes.takes): a connected mailbox sends only one shared message
    within its provider's limit; everything else, a campaign with a mailbox included, uses the ESP.
    Only the ESP is the service's to ration; a user's own mailbox is held to its provider's limits.
    """
    return (
        f"NOT (NOT {campaign}.individual AND {recipients} < {SHARED_MESSAGE_LIMIT} AND ("
        f"({campaign}.google_credential IS NOT NULL AND {recipients} <= {LIMITS['google']})"
        f" OR ({campaign}.microsoft_credential IS NOT NULL AND {recipients} <= {LIMITS['microsoft']})))"
    )


# A live campaign's rows count from the moment it is executed, before they are sent, so that campaigns
# executed one after the other see each other's share. A campaign that failed or was deleted later
# sends nothing more, but what it did send stays on the count. A live campaign's rows number its
# recipients_count: reading them one by one made the count grow with the month's mail (a heavy sender's
# quota answered 7 times a second).
EXECUTED_IN_MONTH = text(
    f"""
    SELECT coalesce(sum(
        CASE WHEN c.failed_at IS NULL AND c.deleted_at IS NULL THEN coalesce(c.recipients_count, 0)
             ELSE (SELECT count(*) FROM email_campaign_emails e WHERE e.campaign = c.id AND e.email IS NOT NULL)
        END), 0)
    FROM email_campaigns c
    WHERE c."from" = :user AND c.executed_at >= :start AND c.executed_at < :end
      AND {through_esp("c", "coalesce(c.recipients_count, 0)")}
    """
)


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


async def executed_this_month(session: AsyncSession, user: uuid.UUID, now: datetime) -> int:
    """Recipients of campaigns sent through the ESP as the user, in any brand, this calendar month (UTC)."""
    start, end = month_bounds(now)
    params = {"user": user, "start": start, "end": end}
    return int((await session.execute(EXECUTED_IN_MONTH, params)).scalar_one() or 0)


# How many addresses a stored campaign goes to, expanded exactly as the sender will expand it.
AUDIENCE_COUNT = text(f"WITH {EXPANSION_CTE} SELECT count(*) FROM expanded")


async def audience_count(session: AsyncSession, campaign: uuid.UUID) -> int:
    """The number of distinct addresses the campaign would go to if it were sent now (suppressions and
    unsubscribed contacts left out), for a person to confirm before scheduling it."""
    return int((await session.execute(AUDIENCE_COUNT, {"campaigns": [campaign]})).scalar_one())
