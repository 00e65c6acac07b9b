"""Brands, users, memberships, API tokens and MLS agents."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.addresses import normalize
from mailroom.crm import tokens
from mailroom.crm.membership import is_direct_member
from mailroom.crm.models import DEFAULT_EMAIL_QUOTA, Agent, Brand, BrandMember, User
from mailroom.crm.notices import queue_confirmation, queue_invitation
from mailroom.errors import Conflict
from mailroom.serialize import full_name


async def create_brand(session: AsyncSession, *, name: str, parent: uuid.UUID | None = None) -> Brand:
    brand = Brand(name=name, parent=parent)
    session.add(brand)
    await session.flush()
    await session.refresh(brand)
    return brand


async def find_user(session: AsyncSession, email: str) -> User | None:
    """The live user with exactly this address (case-insensitive equality, never a pattern)."""
    user: User | None = await session.scalar(
        select(User).where(func.lower(User.email) == normalize(email), User.deleted_at.is_(None))
    )
    return user


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    first_name: str | None = None,
    last_name: str | None = None,
    email_confirmed: bool = False,
    **profile: str | None,
) -> User:
    """A new user; Conflict when the address already has an account (checked by the unique index,
    so two requests racing for one address cannot both create it)."""
    display = profile.pop("display_name", None) or full_name(first_name, last_name)
    values = {
        "email": email.strip(),
        "first_name": first_name,
        "last_name": last_name,
        "display_name": display,
        "email_confirmed": email_confirmed,
        **profile,
    }
    user_id = await session.scalar(insert(User).values(**values).on_conflict_do_nothing().returning(User.id))
    if user_id is None:
        raise Conflict("an account with this address exists already", field="email")
    user = await session.get(User, user_id)
    assert user is not None
    return user


async def add_user_to_brand(
    session: AsyncSession,
    *,
    brand: uuid.UUID,
    email: str,
    role: str,
    profile: dict[str, str | None],
    inviter: uuid.UUID,
) -> User:
    """A new user made a member of the brand, or a member's role changed.

    An address that belongs to someone who is not a member yet is mailed an invitation instead: an
    existing user joins a brand only by accepting one. The answer is then the user the Admin described,
    under an id of its own, exactly as for a new address, so that nobody learns here whether an address
    has an account elsewhere. A new user's address is unconfirmed until they follow the link mailed to it.
    """
    existing = await find_user(session, email)
    if existing is not None:
        if not await is_direct_member(session, existing.id, brand):
            await queue_invitation(session, user=existing.id, brand=brand, role=role, inviter=inviter)
            return _as_new_user(email, profile)
        await set_membership(session, brand=brand, user=existing.id, role=role)
        return existing
    user = await create_user(session, email=email, email_confirmed=False, **profile)
    await set_membership(session, brand=brand, user=user.id, role=role)
    await queue_confirmation(session, user.id)
    return user


def _as_new_user(email: str, profile: dict[str, str | None]) -> User:
    """What a new user of this address and profile would look like; stored nowhere."""
    now = datetime.now(UTC)
    first, last = profile.get("first_name"), profile.get("last_name")
    values = {name: value for name, value in profile.items() if name != "display_name"}
    return User(
        id=uuid.uuid4(),
        email=email.strip(),
        email_confirmed=False,
        display_name=profile.get("display_name") or full_name(first, last),
        email_quota=DEFAULT_EMAIL_QUOTA,
        created_at=now,
        updated_at=None,
        **values,
    )


async def set_membership(session: AsyncSession, *, brand: uuid.UUID, user: uuid.UUID, role: str) -> None:
    stmt = insert(BrandMember).values(brand=brand, user=user, role=role)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["brand", "user"], set_={"role": stmt.excluded.role})
    )


async def create_token(session: AsyncSession, *, user: uuid.UUID) -> str:
    """A new API token for the user; only its hash is stored, so this is the one time it is seen."""
    return (await tokens.issue_token(session, user=user))[1]


async def bootstrap(
    session: AsyncSession, *, brand_name: str, email: str, first_name: str | None, last_name: str | None
) -> tuple[Brand, User, str]:
    """A brand with a confirmed Admin and a token for them: the first step on a new install."""
    brand = await create_brand(session, name=brand_name)
    user = await find_user(session, email) or await create_user(
        session, email=email, first_name=first_name, last_name=last_name, email_confirmed=True
    )
    await set_membership(session, brand=brand.id, user=user.id, role="Admin")
    token = await create_token(session, user=user.id)
    return brand, user, token


async def any_user(session: AsyncSession) -> bool:
    """Whether anyone has an account yet (none: the install's first step, bootstrap, is still to come)."""
    return bool(await session.scalar(select(select(User.id).where(User.deleted_at.is_(None)).exists())))


async def administered_brand(session: AsyncSession, *, email: str, name: str) -> tuple[Brand, User] | None:
    """The live brand this address is an Admin of (the one called ``name`` when there are several, else the
    oldest) and its user; None when the address has no account or administers no brand. Running bootstrap
    again, for a lost token or by mistake, answers this brand rather than making a second one."""
    user = await find_user(session, email)
    if user is None:
        return None
    brand: Brand | None = await session.scalar(
        select(Brand)
        .join(BrandMember, BrandMember.brand == Brand.id)
        .where(BrandMember.user == user.id, BrandMember.role == "Admin", Brand.deleted_at.is_(None))
        .order_by((Brand.name == name).desc(), Brand.created_at, Brand.id)
        .limit(1)
    )
    return None if brand is None else (brand, user)


async def create_agent(session: AsyncSession, *, email: str, full_name: str | None, mls_id: str | None) -> Agent:
    """An agent of the MLS network. The network is shared by every brand, so no brand is involved."""
    agent = Agent(email=email, full_name=full_name, mls_id=mls_id)
    session.add(agent)
    await session.flush()
    await session.refresh(agent)
    return agent
