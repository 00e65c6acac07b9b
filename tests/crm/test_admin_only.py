"""Every endpoint that needs an Admin of the brand refuses an Agent of it and another brand's Admin
with 403, and changes nothing: no user, membership, role, brand, invitation mail or suppression."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.world import Actor, World

SUPPRESSED = "gone@example.com"

# What an Admin-only request could change, read whole before and after.
STATE = {
    "users": "SELECT id, email, first_name FROM users ORDER BY id",
    "members": 'SELECT brand, "user", role FROM brand_members ORDER BY brand, "user"',
    "brands": "SELECT id, name, parent FROM brands ORDER BY id",
    "suppressions": "SELECT brand, email FROM suppressions ORDER BY brand, email",
    "jobs": "SELECT task_name, args::text FROM procrastinate_jobs ORDER BY id",
}


@dataclass
class Brand:
    """A brand with its Admin, an Agent, and a suppressed address."""

    admin: Actor
    agent: Actor
    agent_email: str


Call = Callable[[Actor, Brand], Awaitable[httpx.Response]]
ADMIN_ONLY: dict[str, Call] = {
    "add a user": lambda caller, b: caller.post(
        f"/brands/{b.admin.brand}/users", {"email": "new.person@example.com", "role": "Agent"}
    ),
    "make a member an Admin": lambda caller, b: caller.post(
        f"/brands/{b.admin.brand}/users", {"email": b.agent_email, "role": "Admin"}
    ),
    "invite": lambda caller, b: caller.post(
        f"/brands/{b.admin.brand}/invitations", {"email": "someone@example.com", "role": "Admin"}
    ),
    "create a child brand": lambda caller, b: caller.post("/brands", {"name": "Inside", "parent": str(b.admin.brand)}),
    "lift a suppression": lambda caller, b: caller.delete(f"/brands/{b.admin.brand}/suppressions/{SUPPRESSED}"),
}


async def a_brand(world: World, session: AsyncSession) -> Brand:
    admin = await world.brand_admin()
    email = f"agent-{admin.user.hex[:8]}@example.com"
    agent = await world.member(admin, role="Agent", email=email)
    await session.execute(
        text("INSERT INTO suppressions (brand, email, reason) VALUES (:b, :e, 'unsubscribed')"),
        {"b": admin.brand, "e": SUPPRESSED},
    )
    await session.commit()
    return Brand(admin=admin, agent=agent, agent_email=email)


async def state(session: AsyncSession) -> dict[str, list[Any]]:
    snapshot = {name: list((await session.execute(text(sql))).all()) for name, sql in STATE.items()}
    await session.commit()
    return snapshot


@pytest.mark.parametrize("who", ["an Agent of the brand", "another brand's Admin"])
@pytest.mark.parametrize("action", list(ADMIN_ONLY))
async def test_an_admin_only_endpoint_refuses_and_changes_nothing(
    world: World, session: AsyncSession, who: str, action: str
) -> None:
    brand = await a_brand(world, session)
    caller = brand.agent if who.startswith("an Agent") else await world.brand_admin()
    before = await state(session)

    response = await ADMIN_ONLY[action](caller, brand)

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "Forbidden"
    assert await state(session) == before


async def test_the_brands_admin_is_let_through_each_of_them(world: World, session: AsyncSession) -> None:
    """The same calls made by the Admin succeed: the refusals above are the role check, not a broken call."""
    brand = await a_brand(world, session)
    for action, call in ADMIN_ONLY.items():
        response = await call(brand.admin, brand)
        assert response.status_code < 300, (action, response.text)
