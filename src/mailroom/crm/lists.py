"""CRM lists: named sets of a brand's contacts, a recipient source for campaigns."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, RowMapping, any_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import Contact, CrmList
from mailroom.errors import BadRequest, NotFound

# One statement for any number of members; a contact already on the list stays as it was.
ADD_MEMBERS = text(
    """
    INSERT INTO crm_list_members (list, contact)
    SELECT CAST(:list AS uuid), contact FROM unnest(CAST(:contacts AS uuid[])) AS contact
    ON CONFLICT DO NOTHING
    """
)

# A list's members_count; {list} is the SQL that names the list. Deleted contacts are invisible to every
# read, so they are not counted either.
MEMBERS_COUNT = """(
    SELECT count(*) FROM crm_list_members m JOIN contacts c ON c.id = m.contact
    WHERE m.list = {list} AND c.deleted_at IS NULL
)"""
LIST_WITH_COUNT = text(
    f"SELECT l.*, {MEMBERS_COUNT.format(list='l.id')} AS members_count FROM crm_lists l WHERE l.id = :list"
)


async def create_list(
    session: AsyncSession, *, brand: uuid.UUID, name: str, members: Sequence[uuid.UUID]
) -> RowMapping:
    await _check_members(session, brand=brand, members=members)
    crm_list = CrmList(brand=brand, name=name)
    session.add(crm_list)
    await session.flush()
    if members:
        await session.execute(ADD_MEMBERS, {"list": crm_list.id, "contacts": list(members)})
    return await _read(session, crm_list.id)


async def add_members(
    session: AsyncSession, *, brand: uuid.UUID, list_id: uuid.UUID, members: Sequence[uuid.UUID]
) -> RowMapping:
    """Adds the contacts to the brand's list; adding one that is already there changes nothing."""
    found = await session.scalar(
        select(CrmList.id).where(CrmList.id == list_id, CrmList.brand == brand, CrmList.deleted_at.is_(None))
    )
    if found is None:
        # Another brand's list answers exactly like a missing one: its existence is not revealed.
        raise NotFound("no such list in this brand", field="list")
    await _check_members(session, brand=brand, members=members)
    result = cast(CursorResult[Any], await session.execute(ADD_MEMBERS, {"list": list_id, "contacts": list(members)}))
    if result.rowcount:
        await session.execute(update(CrmList).where(CrmList.id == list_id).values(updated_at=func.now()))
    return await _read(session, list_id)


async def _check_members(session: AsyncSession, *, brand: uuid.UUID, members: Sequence[uuid.UUID]) -> None:
    """Every member must be a live contact of this brand; the first that is not is named by position."""
    if not members:
        return
    # One array parameter rather than an IN list of up to 10,000 separate parameters.
    ids = bindparam("ids", list(set(members)), type_=ARRAY(UUID(as_uuid=True)))
    live = set(
        await session.scalars(
            select(Contact.id).where(Contact.id == any_(ids), Contact.brand == brand, Contact.deleted_at.is_(None))
        )
    )
    for position, contact in enumerate(members):
        if contact not in live:
            raise BadRequest("is not a contact of this brand", field=f"members.{position}")


async def _read(session: AsyncSession, list_id: uuid.UUID) -> RowMapping:
    row = (await session.execute(LIST_WITH_COUNT, {"list": list_id})).mappings().one()
    return row
