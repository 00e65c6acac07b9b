"""Campaigns read back for API answers, through psycopg rather than the ORM.

A read here is one or two statements on a psycopg connection: the read pool's (autocommit, no
transaction around a lone SELECT) or, after a write, the write's own transaction's
(``db.driver_connection``). Rows come back as named tuples whose fields carry the ORM's attribute
names (``from_``, not ``from``), so the serialisers in ``views`` read them as they read ORM objects;
the column lists are derived from the models, never written out twice.
"""

from __future__ import annotations

import uuid
from collections import namedtuple
from collections.abc import Sequence
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import RowFactory, dict_row, namedtuple_row, tuple_row
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.listing import Status, order_sql, status_sql
from mailroom.campaigns.models import (
    Email,
    EmailCampaign,
    EmailCampaignAttachment,
    EmailCampaignEmail,
    EmailCampaignRecipient,
)
from mailroom.crm.lists import MEMBERS_COUNT
from mailroom.crm.membership import ROLE_IN_BRAND, required
from mailroom.crm.models import Agent, Brand, Contact, CrmList, User
from mailroom.errors import BadRequest, NotFound
from mailroom.orm import Base


def columns_of(model: type[Base], alias: str) -> list[str]:
    """``alias."column" AS attribute`` for every mapped column of the model."""
    return [f'{alias}."{column.name}" AS {key}' for key, column in model.__mapper__.columns.items()]


def row_type(model: type[Base]) -> Any:
    return namedtuple(model.__name__ + "Row", list(model.__mapper__.columns.keys()))


CAMPAIGN_COLUMNS = ", ".join(columns_of(EmailCampaign, "c"))
# The sender's confirmation travels with the campaign: from_address_verified needs it on every answer.
CAMPAIGN_READ = f"""
    SELECT {CAMPAIGN_COLUMNS}, u.email_confirmed AS from_confirmed,
           ({ROLE_IN_BRAND.format(brand="c.brand", user="%(user)s")}) AS caller_role
    FROM email_campaigns c LEFT JOIN users u ON u.id = c."from"
    WHERE c.id = %(id)s AND c.deleted_at IS NULL
"""
# The same rule as CAMPAIGN_READ's, for a read that needs no column of the campaign itself.
VISIBLE = f"""
    SELECT ({ROLE_IN_BRAND.format(brand="c.brand", user="%(user)s")}) AS caller_role
    FROM email_campaigns c WHERE c.id = %(id)s AND c.deleted_at IS NULL
"""
CALLER_ROLE = f"SELECT ({ROLE_IN_BRAND.format(brand='%(brand)s', user='%(user)s')}) AS role"
RECIPIENTS = f"""
    SELECT {", ".join(columns_of(EmailCampaignRecipient, "r"))} FROM email_campaign_recipients r
    WHERE r.campaign = ANY(%(ids)s) AND r.deleted_at IS NULL
    ORDER BY r.created_at, CASE r.send_type WHEN 'To' THEN 0 WHEN 'CC' THEN 1 ELSE 2 END, r.id
"""
ATTACHMENTS = f"""
    SELECT {", ".join(columns_of(EmailCampaignAttachment, "a"))} FROM email_campaign_attachments a
    WHERE a.campaign = ANY(%(ids)s) AND a.deleted_at IS NULL ORDER BY a.created_at, a.id
"""
SENDERS = f"SELECT {', '.join(columns_of(User, 'u'))} FROM users u WHERE u.id = ANY(%(ids)s)"

# What recipient rows name, for the email_campaign_recipient.* associations: one statement each for all the
# recipients (of any number of campaigns) that name one, keyed by the recipient. Never more than the reader
# may see otherwise: a contact or list only of the campaign's own brand, a brand only one the reader has a
# role in (the rule a Brand recipient is written under), and nothing deleted (a contact deleted since the
# campaign was written reads null, as it reads nowhere else either). Agents are every brand's.
_NAMING = """
    SELECT r.id AS recipient, {columns} FROM email_campaign_recipients r
    JOIN email_campaigns c ON c.id = r.campaign JOIN {table} x ON x.id = r."{field}" AND {visible}
    WHERE r.id = ANY(%(ids)s)
"""
_OF_THE_BRAND = "x.brand = c.brand AND x.deleted_at IS NULL"
Naming = Literal["contact", "list", "brand", "agent"]
NAMED_BY_RECIPIENTS: dict[Naming, str] = {
    "contact": _NAMING.format(
        columns=", ".join(columns_of(Contact, "x")), table="contacts", field="contact", visible=_OF_THE_BRAND
    ),
    "list": _NAMING.format(
        columns=", ".join([*columns_of(CrmList, "x"), f"{MEMBERS_COUNT.format(list='x.id')} AS members_count"]),
        table="crm_lists",
        field="list",
        visible=_OF_THE_BRAND,
    ),
    "brand": _NAMING.format(
        columns=", ".join(columns_of(Brand, "x")),
        table="brands",
        field="brand",
        visible=f"x.deleted_at IS NULL AND ({ROLE_IN_BRAND.format(brand='x.id', user='%(reader)s')}) IS NOT NULL",
    ),
    "agent": _NAMING.format(columns=", ".join(columns_of(Agent, "x")), table="agents", field="agent", visible="true"),
}

_ROW = row_type(EmailCampaignEmail)
# What a recipient row shows of its contact; the email only when asked for, its bodies only when
# asked for too: a page of 250 rows would otherwise carry 250 bodies it never answers.
_CONTACT: Any = namedtuple("_CONTACT", ["id", "first_name", "last_name", "profile_image_url"])
_CONTACT_COLUMNS = [f"ct.{name} AS {name}" for name in _CONTACT._fields]
_BODIES = ("html", "text")
_EMAIL_COLUMNS = dict(zip(Email.__mapper__.columns.keys(), columns_of(Email, "m"), strict=True))
CAMPAIGN_EMAILS = (
    "SELECT {columns} FROM email_campaign_emails ce LEFT JOIN contacts ct ON ct.id = ce.contact {join}"
    "WHERE ce.campaign = ANY(%(ids)s)"
)


def _email_fields(associations: frozenset[str]) -> list[str]:
    if "email_campaign_email.email" not in associations:
        return []
    return [n for n in _EMAIL_COLUMNS if n not in _BODIES or f"email.{n}" in associations]


EMAIL_ORDER = {
    "clicked": "ce.clicked",
    "opened": "ce.opened",
    "unsubscribed": "ce.unsubscribed",
    "failed": "ce.failed",
    # NULL (not '') without a contact, so unnamed rows sort last either way.
    "full_name": "nullif(concat_ws(' ', ct.first_name, ct.last_name), '')",
}
# The orders campaign_emails takes, for the document: a name, any signs before it, or nothing at all.
EMAIL_ORDER_PATTERN = "^(?:[+-]*(?:" + "|".join(EMAIL_ORDER) + "))?$"
# `email_campaign.emails` on a campaign (or a page of campaigns) holds at most this many rows each, in
# position order; `recipients_count` tells how many there are and GET /emails/:id/emails pages them.
EMAILS_ASSOCIATION_CAP = 250


async def fetch(
    conn: AsyncConnection[Any], sql: str, params: dict[str, Any], row_factory: RowFactory[Any] = namedtuple_row
) -> list[Any]:
    async with conn.cursor(row_factory=row_factory) as cursor:
        await cursor.execute(sql, params)
        return await cursor.fetchall()


async def visible_campaign(conn: AsyncConnection[Any], campaign: uuid.UUID, user: uuid.UUID) -> Any:
    """The campaign if it is live and the user is a member of its brand; otherwise 404, never
    another brand's data."""
    rows = await fetch(conn, CAMPAIGN_READ, {"id": campaign, "user": user})
    if not rows or rows[0].caller_role is None:
        raise NotFound("no such campaign", field="id")
    return rows[0]


async def require_visible(conn: AsyncConnection[Any], campaign: uuid.UUID, user: uuid.UUID) -> None:
    """``visible_campaign``'s 404, without reading the campaign."""
    rows = await fetch(conn, VISIBLE, {"id": campaign, "user": user}, tuple_row)
    if not rows or rows[0][0] is None:
        raise NotFound("no such campaign", field="id")


async def require_member(conn: AsyncConnection[Any], user: uuid.UUID, brand: uuid.UUID) -> str:
    """``membership.require_member`` on a psycopg connection."""
    (row,) = await fetch(conn, CALLER_ROLE, {"brand": brand, "user": user})
    return required(row.role)


async def brand_campaigns(
    conn: AsyncConnection[Any],
    brand: uuid.UUID,
    user: uuid.UUID,
    *,
    status: Status | None,
    start: int,
    limit: int,
    order: str | None,
    subject_contains: str | None = None,
    version: str | None = None,
) -> tuple[list[Any], int]:
    """A page of the brand's live campaigns and how many match in all, in one statement: the caller's
    role (403 without one) comes first, and the total rides along as a window count. ``subject_contains``
    keeps those whose subject holds it, in any case. With ``version`` (SQL over the campaign c and its
    sender u) a row is the campaign's id and that version only, not the campaign."""
    where = f"c.brand = %(brand)s AND c.deleted_at IS NULL{status_sql(status, 'c')}"
    params: dict[str, Any] = {"brand": brand, "user": user, "start": start, "limit": limit}
    if subject_contains:
        where += r" AND c.subject ILIKE %(subject)s ESCAPE '\'"
        params["subject"] = "%" + like_escaped(subject_contains) + "%"
    columns = (
        f"{CAMPAIGN_COLUMNS}, u.email_confirmed AS from_confirmed" if version is None else f"c.id, {version} AS version"
    )
    sql = f"""
        WITH caller AS (SELECT ({ROLE_IN_BRAND.format(brand="%(brand)s", user="%(user)s")}) AS caller_role),
        page AS (
            SELECT {columns}, count(*) OVER () AS total_matches
            FROM email_campaigns c LEFT JOIN users u ON u.id = c."from"
            WHERE {where} AND (SELECT caller_role FROM caller) IS NOT NULL
            ORDER BY {order_sql(order, "c")}, c.id OFFSET %(start)s LIMIT %(limit)s
        )
        SELECT caller.caller_role, page.* FROM caller LEFT JOIN page ON true
    """
    rows = await fetch(conn, sql, params)
    required(rows[0].caller_role)
    if rows[0].id is not None:
        return rows, int(rows[0].total_matches)
    counted = await fetch(conn, f"SELECT count(*) AS n FROM email_campaigns c WHERE {where}", params)
    return [], int(counted[0].n)


def like_escaped(text: str) -> str:
    """``text`` matched literally by LIKE ... ESCAPE '\\': its % and _ are no wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def recipients(conn: AsyncConnection[Any], ids: Sequence[uuid.UUID]) -> list[Any]:
    return await fetch(conn, RECIPIENTS, {"ids": list(ids)})


async def attachments(conn: AsyncConnection[Any], ids: Sequence[uuid.UUID]) -> list[Any]:
    return await fetch(conn, ATTACHMENTS, {"ids": list(ids)})


async def senders(conn: AsyncConnection[Any], ids: Sequence[uuid.UUID]) -> list[Any]:
    return await fetch(conn, SENDERS, {"ids": list(set(ids))})


async def named_by_recipients(
    conn: AsyncConnection[Any], name: Naming, recipients: Sequence[uuid.UUID], reader: uuid.UUID
) -> dict[uuid.UUID, Any]:
    """The contact, list, brand or agent (``name``) each of the recipients names, by recipient id; a
    recipient whose one the reader may not see is left out. Contacts and lists come as dicts, read by key
    as the CRM's own reads are; brands and agents as named tuples, read by attribute as ORM objects are."""
    if not recipients:
        return {}
    by_key = name in ("contact", "list")
    rows = await fetch(
        conn,
        NAMED_BY_RECIPIENTS[name],
        {"ids": list(recipients), "reader": reader},
        dict_row if by_key else namedtuple_row,
    )
    return {row["recipient"] if by_key else row.recipient: row for row in rows}


async def campaign_emails(
    conn: AsyncConnection[Any],
    ids: Sequence[uuid.UUID],
    associations: frozenset[str],
    *,
    order: str | None = None,
    first: int | None = None,
    start: int = 0,
    limit: int | None = None,
) -> list[tuple[Any, ...]]:
    """Recipient rows with their contact and, when asked for, their email (None when there is none): a
    page of one campaign's (``start``, ``limit``, ``order``; then with the number of all its rows last),
    or the ``first`` rows of each of several, in position order."""
    email_fields = _email_fields(associations)
    columns = columns_of(EmailCampaignEmail, "ce") + _CONTACT_COLUMNS + [_EMAIL_COLUMNS[n] for n in email_fields]
    if limit is not None:
        # A page carries the number of all rows as a window count: no second statement to count them.
        columns.append("count(*) OVER () AS total")
    join = "LEFT JOIN emails m ON m.id = ce.email " if email_fields else ""
    sql = CAMPAIGN_EMAILS.format(columns=", ".join(columns), join=join)
    params: dict[str, Any] = {"ids": list(ids)}
    if first is not None:
        sql += " AND ce.seq <= %(first)s"
        params["first"] = first
    ordering = email_order_sql(order)
    if ordering is None:
        raise BadRequest(f"must be one of {', '.join(EMAIL_ORDER)}, optionally with -", field="order")
    sql += ordering
    if limit is not None:
        sql += " OFFSET %(start)s LIMIT %(limit)s"
        params.update(start=start, limit=limit)
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(sql, params)
        raw = await cursor.fetchall()
    return _decoded(raw, email_fields, paged=limit is not None)


def email_order_sql(order: str | None) -> str | None:
    """The ORDER BY of recipient rows (ce, their contacts ct) for an order parameter; None for one not known."""
    ordering = []
    if order:
        column = EMAIL_ORDER.get(order.lstrip("+-"))
        if column is None:
            return None
        ordering.append(f"{column} {'DESC' if order.startswith('-') else 'ASC'} NULLS LAST")
    return " ORDER BY " + ", ".join([*ordering, "ce.campaign", "ce.seq"])


# Recipient rows by id, as ``campaign_emails`` reads them without an email, and the version of each.
CAMPAIGN_EMAILS_BY_ID = (
    "SELECT {columns}, {version} AS version FROM email_campaign_emails ce LEFT JOIN contacts ct ON ct.id = ce.contact "
    "WHERE ce.id = ANY(%(ids)s)"
)


async def campaign_emails_by_id(
    conn: AsyncConnection[Any], ids: Sequence[uuid.UUID], version: str
) -> list[tuple[str, tuple[Any, Any | None]]]:
    """The recipient rows (and their contacts) of these ids, each with its version (``version``: SQL over
    ce and ct), in no particular order."""
    columns = ", ".join(columns_of(EmailCampaignEmail, "ce") + _CONTACT_COLUMNS)
    sql = CAMPAIGN_EMAILS_BY_ID.format(columns=columns, version=version)
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(sql, {"ids": list(ids)})
        raw = await cursor.fetchall()
    decoded = _decoded([values[:-1] for values in raw], [], paged=False)
    return [(values[-1], (row, contact)) for values, (row, contact, _) in zip(raw, decoded, strict=True)]


async def visible_campaign_emails(
    conn: AsyncConnection[Any],
    campaign: uuid.UUID,
    user: uuid.UUID,
    *,
    ordering: str,
    start: int,
    limit: int,
    version: str,
) -> tuple[list[Any], int]:
    """``require_visible`` and a page of the campaign's recipient rows, as (id, version) rows in order
    (``ordering`` from ``email_order_sql``, ``version`` SQL over ce and ct), with the number of all its rows:
    one statement where there were two."""
    sql = f"""
        WITH caller AS ({VISIBLE}),
        page AS (
            SELECT ce.id, {version} AS version, count(*) OVER () AS total
            FROM email_campaign_emails ce LEFT JOIN contacts ct ON ct.id = ce.contact
            WHERE ce.campaign = %(id)s AND (SELECT caller_role FROM caller) IS NOT NULL
            {ordering} OFFSET %(start)s LIMIT %(limit)s
        )
        SELECT (SELECT caller_role FROM caller) AS caller_role, page.* FROM (SELECT) AS one LEFT JOIN page ON true
    """
    rows = await fetch(conn, sql, {"id": campaign, "user": user, "start": start, "limit": limit})
    if rows[0].caller_role is None:
        raise NotFound("no such campaign", field="id")
    if rows[0].id is not None:
        return rows, int(rows[0].total)
    counted = await fetch(
        conn, "SELECT count(*) AS n FROM email_campaign_emails WHERE campaign = %(c)s", {"c": campaign}
    )
    return [], int(counted[0].n)


def _decoded(raw: Sequence[tuple[Any, ...]], email_fields: list[str], *, paged: bool) -> list[tuple[Any, ...]]:
    """Plain rows as (recipient row, contact or None, email or None[, number of all rows])."""
    email_row: Any = namedtuple("email_row", email_fields) if email_fields else None
    a = len(_ROW._fields)
    b = a + len(_CONTACT._fields)
    c = b + len(email_fields)
    out = []
    for values in raw:
        contact = _CONTACT._make(values[a:b])
        email = email_row._make(values[b:c]) if email_row is not None else None
        found = (
            _ROW._make(values[:a]),
            contact if contact.id else None,
            email if email is not None and email.id else None,
        )
        out.append((*found, int(values[c])) if paged else found)
    return out


async def campaign_emails_page(
    conn: AsyncConnection[Any],
    campaign: uuid.UUID,
    associations: frozenset[str],
    *,
    order: str | None,
    start: int,
    limit: int,
) -> tuple[list[tuple[Any, Any | None, Any | None]], int]:
    """A page of one campaign's recipient rows and the number of all of them."""
    page = await campaign_emails(conn, [campaign], associations, order=order, start=start, limit=limit)
    if page:
        return [(row, contact, email) for row, contact, email, _ in page], page[0][3]
    rows = await fetch(conn, "SELECT count(*) AS n FROM email_campaign_emails WHERE campaign = %(c)s", {"c": campaign})
    return [], int(rows[0].n)


# One pass over campaigns, not over their per-recipient rows: the per-campaign counters are kept by
# the sender (and settled from the rows when a campaign finishes), so the sums are the message totals.
CAMPAIGN_TOTALS = text(
    """
    SELECT count(*) AS executed, count(failed_at) AS failed,
           coalesce(sum(sent), 0) AS messages_sent, coalesce(sum(failed), 0) AS messages_failed
    FROM email_campaigns WHERE executed_at IS NOT NULL
    """
)


async def campaign_totals(session: AsyncSession) -> Row[Any]:
    """Campaigns executed and failed, and messages sent and failed, over the whole service."""
    return (await session.execute(CAMPAIGN_TOTALS)).one()
