"""What a campaign's report reads beside the stats: a page of its recipients, each with their opens,
clicks and last activity, and the same for every recipient in batches (the CSV export).

The page is one statement shaped for a campaign of 100,000 recipients: the rows are ordered and cut
to the page on the recipient rows alone (their contact joined only when the order or the search needs
a name), and only the page's rows are then read whole, with their contact and their events. The orders
and the search are the API's own (``GET /emails/:id/emails``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row

from mailroom.campaigns.reads import EMAIL_ORDER, email_order_sql, like_escaped
from mailroom.errors import BadRequest

COUNTERS = ("delivered", "failed", "opened", "clicked", "unsubscribed", "complained")
# A recipient row as the report shows it: its counters, its contact's name, and its opens and clicks as the
# stats count them (those set aside are no one's reading) with when anything last happened. The events are
# found by message first: ix_email_events_email_type finds a message's events at once, where the
# campaign's index would walk every event of the campaign; then by recipient row, as a message that went
# to several recipients (a campaign that is not individual) carries the events of each.
_ROW = f"""
    SELECT ce.id, ce.email, ce.email_address, ce.error, {", ".join(f"ce.{c}" for c in COUNTERS)},
           ct.first_name, ct.last_name, a.last, a.opens, a.clicks{{total}}
    FROM {{rows}}
    LEFT JOIN contacts ct ON ct.id = ce.contact
    LEFT JOIN LATERAL (
        SELECT max(occurred_at) AS last,
               count(*) FILTER (WHERE type = 'opened' AND uncounted IS NULL) AS opens,
               count(*) FILTER (WHERE type = 'clicked' AND uncounted IS NULL) AS clicks
        FROM email_events e
        WHERE e.email = ce.email AND e.campaign_email = ce.id AND e.type <> 'accepted'
    ) a ON true
"""
_PAGE = (
    """
    WITH page AS (
        SELECT ce.id{matching} FROM email_campaign_emails ce {contact}
        WHERE ce.campaign = %(campaign)s{search}
        {order} OFFSET %(start)s LIMIT %(limit)s
    )"""
    + _ROW.format(total=", {total} AS matching", rows="page JOIN email_campaign_emails ce ON ce.id = page.id")
    + "{order}"
)
_EVERY = _ROW.format(total="", rows="email_campaign_emails ce") + "WHERE ce.campaign = %(campaign)s{search}{order}"
# The read pool keeps generic plans (right for its many small lookups); one plan for campaigns of 5 rows and
# of 100,000 sorts the large one more slowly (measured: 124 ms against 107 for a deep page by name).
PLANNED_FOR_THE_CAMPAIGN = "SET LOCAL plan_cache_mode = force_custom_plan"
_COUNT = "SELECT count(*) FROM email_campaign_emails ce {contact} WHERE ce.campaign = %(campaign)s{search}"


def _filters(order: str, search: str | None) -> tuple[str, str, str, dict[str, Any]]:
    """The ORDER BY, the contact join, the search condition and its parameter, as the API orders and searches."""
    ordering = email_order_sql(order)
    if ordering is None:
        raise BadRequest(f"must be one of {', '.join(EMAIL_ORDER)}, optionally with -", field="sort")
    named = search is not None or order.lstrip("+-") == "full_name"
    contact = "LEFT JOIN contacts ct ON ct.id = ce.contact" if named else ""
    if search is None:
        return ordering, contact, "", {}
    found = r"ILIKE %(search)s ESCAPE '\'"
    condition = f" AND (ce.email_address {found} OR {EMAIL_ORDER['full_name']} {found})"
    return ordering, contact, condition, {"search": "%" + like_escaped(search) + "%"}


async def recipients_page(
    conn: AsyncConnection[Any], campaign: uuid.UUID, *, order: str, search: str | None, start: int, limit: int
) -> tuple[list[Any], int]:
    """(On a connection that plans for the parameters given: not the read pool's, see PLANNED_FOR_THE_CAMPAIGN.)
    A page of the campaign's recipient rows in ``order`` (one of the API's), those whose address or
    contact's name holds ``search`` if given, each with its contact's name and its activity (``last``
    is None for a row nothing happened to after handing it over); and how many rows match in all."""
    ordering, contact, condition, params = _filters(order, search)
    # Searched, the matching rows are few enough to count while cutting the page; unsearched, counting
    # them all beside the sort would hold every row back, where an index count takes a few ms.
    sql = _PAGE.format(
        matching=", count(*) OVER () AS matching" if search else "",
        contact=contact,
        search=condition,
        order=ordering,
        total="page.matching"
        if search
        else "(SELECT count(*) FROM email_campaign_emails WHERE campaign = %(campaign)s)",
    )
    params.update(campaign=campaign, start=start, limit=limit)
    async with conn.cursor(row_factory=namedtuple_row) as cursor:
        await cursor.execute(sql, params)
        rows: list[Any] = await cursor.fetchall()
        if rows:
            return rows, int(rows[0].matching)
        # Past the last page (or nothing found): the count alone says how many pages there are.
        await cursor.execute(_COUNT.format(contact=contact, search=condition), params)
        counted = await cursor.fetchone()
        return [], int(counted[0]) if counted else 0


async def recipients_batches(
    conn: AsyncConnection[Any], campaign: uuid.UUID, *, order: str, search: str | None, batch: int
) -> AsyncIterator[list[Any]]:
    """Every recipient row ``recipients_page`` would show, in its order, ``batch`` rows at a time through
    a server-side cursor: an export of 100,000 rows holds one batch in memory, not all of them."""
    ordering, _, condition, params = _filters(order, search)
    params["campaign"] = campaign
    sql = _EVERY.format(search=condition, order=ordering)
    # A named (server-side) cursor lives in a transaction; the read pool's connections are autocommit.
    async with conn.transaction(), conn.cursor("report_recipients", row_factory=namedtuple_row) as cursor:
        await conn.execute(PLANNED_FOR_THE_CAMPAIGN)
        await cursor.execute(sql, params)
        while rows := await cursor.fetchmany(batch):
            yield rows
