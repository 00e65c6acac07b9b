"""Contacts: bulk creation (JSON or CSV, one insert path), and the brand's contact listing."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import RowMapping, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import Contact
from mailroom.crm.schemas import MAX_PER_CALL, ContactIn
from mailroom.errors import BadRequest

# The whole call travels as one jsonb document and is expanded server-side, so 10,000 contacts cost
# one round trip and one plan rather than one per row (or one per multi-VALUES chunk). Ids are drawn in
# `batch` (materialised once, as it is volatile and read twice) so the answer can be put back in the
# order the contacts were sent: RETURNING alone promises no order.
INSERT_CONTACTS = text(
    """
    WITH batch AS (
        SELECT gen_random_uuid() AS id, r.*
        FROM ROWS FROM (
            jsonb_to_recordset(CAST(:payload AS jsonb)) AS (
                emails text[], partner_email text, first_name text, last_name text,
                profile_image_url text, tags text[], parked boolean
            )
        ) WITH ORDINALITY AS r(emails, partner_email, first_name, last_name, profile_image_url, tags, parked, ord)
    ), inserted AS (
        INSERT INTO contacts (id, brand, emails, partner_email, first_name, last_name, profile_image_url, tags, parked)
        SELECT id, CAST(:brand AS uuid), emails, partner_email, first_name, last_name, profile_image_url, tags, parked
        FROM batch ORDER BY ord
        RETURNING *
    )
    SELECT inserted.* FROM inserted JOIN batch USING (id) ORDER BY batch.ord
    """
)

# Case-insensitive tag match written exactly as the GIN index expression (ix_contacts_tags_lower), so
# the planner can use the index instead of scanning every contact of the brand.
HAS_TAG = text("mailroom_lower_array(contacts.tags) @> ARRAY[lower(btrim(CAST(:tag AS text)))]")

CSV_COLUMNS = ("email", "first_name", "last_name", "tags", "partner_email")
# What a CSV column is called in a ContactIn validation error, and back.
_CSV_COLUMN_OF_FIELD = {"emails": "email"}


async def create_contacts(session: AsyncSession, *, brand: uuid.UUID, items: Sequence[ContactIn]) -> list[RowMapping]:
    """Insert the contacts in one statement and return their rows in the order given."""
    if not items:
        raise BadRequest("at least one contact is required", field="contacts")
    if len(items) > MAX_PER_CALL:
        raise BadRequest(f"at most {MAX_PER_CALL} contacts per call", field="contacts")
    payload = orjson.dumps([item.model_dump() for item in items]).decode()
    result = await session.execute(INSERT_CONTACTS, {"payload": payload, "brand": brand})
    return list(result.mappings())


async def list_contacts(
    session: AsyncSession, *, brand: uuid.UUID, start: int, limit: int, tag: str | None
) -> tuple[list[RowMapping], int]:
    """One page of the brand's live contacts, newest first, and the number of all that match."""
    where: list[Any] = [Contact.brand == brand, Contact.deleted_at.is_(None)]
    if tag is not None:
        where.append(HAS_TAG.bindparams(tag=tag))
    total = await session.scalar(select(func.count()).select_from(Contact).where(*where))
    # id breaks ties between contacts created by the same call (they share created_at), so pages
    # never overlap or skip.
    page = await session.execute(
        select(*Contact.__table__.c)
        .where(*where)
        .order_by(Contact.created_at.desc(), Contact.id.desc())
        .offset(start)
        .limit(limit)
    )
    return list(page.mappings()), int(total or 0)


def parse_csv(content: str) -> list[ContactIn]:
    """CSV with a header row -> contacts, refusing the file at its first bad row.

    Rows are numbered as a spreadsheet shows them: the header is row 1. `tags` (and `email`, for a
    contact with several addresses) hold values separated by `;`. Blank rows are skipped.
    """
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    number = 1  # the row being read, so a CSV syntax error is reported where a spreadsheet shows it
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise BadRequest("the CSV needs a header row naming its columns", field="file")
        columns = _columns(header)
        items: list[ContactIn] = []
        number = 2
        for cells in reader:
            if any(cell.strip() for cell in cells):
                if len(items) == MAX_PER_CALL:
                    raise BadRequest(f"at most {MAX_PER_CALL} contacts per call", field="contacts")
                if len(cells) > len(columns):
                    message = f"has {len(cells)} cells but the header names {len(columns)}"
                    raise BadRequest(message, field=f"row {number}")
                items.append(_contact_of_row(number, dict(zip(columns, cells, strict=False))))
            number += 1
    except csv.Error as exc:
        raise BadRequest(f"is not valid CSV ({exc})", field=f"row {number}") from None
    return items


def _columns(header: list[str]) -> list[str]:
    columns = [cell.strip().lower() for cell in header]
    for position, name in enumerate(columns, start=1):
        if name not in CSV_COLUMNS:
            expected = ", ".join(CSV_COLUMNS)
            raise BadRequest(f"unknown column {name!r} (column {position}); expected {expected}", field="row 1")
        if columns.index(name) != position - 1:
            raise BadRequest(f"column {name!r} appears twice", field="row 1")
    if "email" not in columns:
        raise BadRequest("the header must have an 'email' column", field="row 1")
    return columns


def _split(cell: str | None) -> list[str]:
    return [part.strip() for part in (cell or "").split(";") if part.strip()]


def _contact_of_row(number: int, row: dict[str, str]) -> ContactIn:
    fields: dict[str, Any] = {"emails": _split(row.get("email")), "tags": _split(row.get("tags"))}
    for name in ("first_name", "last_name", "partner_email"):
        value = (row.get(name) or "").strip()
        fields[name] = value or None
    try:
        return ContactIn.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        column = _column_of(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise BadRequest(message, field=f"row {number}, {column}") from None


def _column_of(loc: Iterable[int | str]) -> str:
    first = str(next(iter(loc), "row"))
    return _CSV_COLUMN_OF_FIELD.get(first, first)
