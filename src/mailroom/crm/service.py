"""Brands, users, memberships, API tokens and MLS agents."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm import tokens
from mailroom.crm.models import Agent, Brand, BrandMember, User
from mailroom.serialize import full_name


async def create_brand(session: AsyncSession, *, name: str, parent: uuid.UUID | None = None) -> Brand:
    brand = Brand(name=name, parent=parent)
    session.add(brand)
    await session.flush()
    await session.refresh(brand)
    return brand


async def ensure_user(
    session: AsyncSession,
    *,
    email: str,
    first_name: str | None = None,
    last_name: str | None = None,
    email_confirmed: bool = False,
    **profile: str | None,
) -> User:
    """The user with this address (case-insensitive), created when there is none."""
    email = email.strip()
    user = await session.scalar(select(User).where(User.email.ilike(email), User.deleted_at.is_(None)))
    if user is not None:
        return user
    display = profile.pop("display_name", None) or full_name(first_name, last_name)
    user = User(
        email=email,
        first_name=first_name,
        last_name=last_name,
        display_name=display,
        email_confirmed=email_confirmed,
        **profile,
    )
    session.add(user)
    await session.flush()
    await session.refresh(user)
    return user


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
    user = await ensure_user(session, email=email, first_name=first_name, last_name=last_name, email_confirmed=True)
    await set_membership(session, brand=brand.id, user=user.id, role="Admin")
    token = await create_token(session, user=user.id)
    return brand, user, token


async def create_agent(session: AsyncSession, *, email: str, full_name: str | None, mls_id: str | None) -> Agent:
    """An agent of the MLS network. The network is shared by every brand, so no brand is involved."""
    agent = Agent(email=email, full_name=full_name, mls_id=mls_id)
    session.add(agent)
    await session.flush()
    await session.refresh(agent)
    return agent
