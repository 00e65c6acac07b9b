"""Who belongs to which brand, and what that lets them do.

A brand is a tenant. A user reaches a brand as its member or as a member of one of its ancestors
(a brokerage's people see its teams); the role that counts is the one held nearest the brand.
These checks are domain rules: HTTP routes, campaign rules and the CLI all ask here.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.errors import Forbidden

# The role the user holds in the brand itself or in its nearest ancestor that has them. The depth
# bound keeps a corrupted parent cycle from recursing forever. A template: {brand} and {user} are the
# SQL that names them, a parameter or, in a read that checks many rows at once, a column.
ROLE_IN_BRAND = """
    WITH RECURSIVE lineage(id, depth) AS (
        SELECT id, 0 FROM brands WHERE id = {brand} AND deleted_at IS NULL
        UNION ALL
        SELECT b.parent, l.depth + 1 FROM lineage l JOIN brands b ON b.id = l.id
        WHERE b.parent IS NOT NULL AND l.depth < 32
    )
    SELECT m.role FROM lineage l JOIN brand_members m ON m.brand = l.id AND m.user = {user}
    ORDER BY l.depth LIMIT 1
"""
MEMBER_ROLE_SQL = text(ROLE_IN_BRAND.format(brand=":brand", user=":user"))


async def member_role(session: AsyncSession, user: uuid.UUID, brand: uuid.UUID) -> str | None:
    role: str | None = await session.scalar(MEMBER_ROLE_SQL, {"brand": brand, "user": user})
    return role


def required(role: str | None, *, field: str = "brand") -> str:
    """The role, or 403 when there is none (whether or not the brand exists): the same refusal whichever
    read found the role."""
    if role is None:
        raise Forbidden("you are not a member of this brand", field=field)
    return role


async def require_member(session: AsyncSession, user: uuid.UUID, brand: uuid.UUID, *, field: str = "brand") -> str:
    """The user's role in the brand; 403 when they have none."""
    return required(await member_role(session, user, brand), field=field)


async def require_admin(session: AsyncSession, user: uuid.UUID, brand: uuid.UUID, *, field: str = "brand") -> None:
    if await require_member(session, user, brand, field=field) != "Admin":
        raise Forbidden("only an Admin of this brand may do this", field=field)


async def is_direct_member(session: AsyncSession, user: uuid.UUID, brand: uuid.UUID) -> bool:
    found = await session.scalar(
        text('SELECT true FROM brand_members WHERE brand = :brand AND "user" = :user'), {"brand": brand, "user": user}
    )
    return bool(found)


# Every brand the user reaches: those they are a member of and, below them, their teams (the brands whose
# ROLE_IN_BRAND finds them), each once, by name. The depth bound is ROLE_IN_BRAND's.
USER_BRANDS = text(
    """
    WITH RECURSIVE reach(id, depth) AS (
        SELECT m.brand, 0 FROM brand_members m WHERE m.user = :user
        UNION
        SELECT b.id, r.depth + 1 FROM reach r JOIN brands b ON b.parent = r.id WHERE r.depth < 32
    )
    SELECT DISTINCT b.id, b.name FROM reach r JOIN brands b ON b.id = r.id AND b.deleted_at IS NULL
    ORDER BY b.name, b.id
    """
)


async def user_brands(session: AsyncSession, user: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    """The brands the user may act in (as members or through a parent brand), by name."""
    return [(row.id, row.name) for row in await session.execute(USER_BRANDS, {"user": user})]
