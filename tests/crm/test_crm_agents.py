"""POST /agents: the MLS agent network, shared by every brand."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import Agent
from tests.support.world import Actor, World


async def agents_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Agent)) or 0)


async def test_any_user_may_add_an_agent(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    member = await world.member(admin, role="Agent")
    response = await member.post("/agents", {"email": "jo@mls.example.com", "full_name": "Jo Smith", "mls_id": "M-1"})
    agent = member.data(response)
    assert agent["type"] == "agent"
    assert (agent["email"], agent["full_name"], agent["mls_id"]) == ("jo@mls.example.com", "Jo Smith", "M-1")
    assert isinstance(agent["created_at"], float)

    row = (await session.execute(select(Agent.__table__).where(Agent.id == uuid.UUID(agent["id"])))).one()
    assert (row.email, row.full_name, row.mls_id) == ("jo@mls.example.com", "Jo Smith", "M-1")


async def test_the_helper_makes_agents_for_later_tests(world: World) -> None:
    actor = await world.brand_admin()
    first, second = await world.agent(actor), await world.agent(actor, full_name="Al")
    assert first["id"] != second["id"] and second["full_name"] == "Al"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"full_name": "No Email"}, "email: "),
        ({"email": "not-an-address"}, "email: is not a valid email address"),
        ({"email": "a@example.com", "full_name": ["x"]}, "full_name: "),
        ({"email": "a@example.com", "mls_id": 12}, "mls_id: "),
        ({"email": "a@example.com", "brand": str(uuid.uuid4())}, "brand: "),
        ({"email": "a@example.com", "full_name": "\x00"}, "full_name: "),
    ],
)
async def test_bad_agents_are_refused(world: World, session: AsyncSession, body: dict[str, Any], message: str) -> None:
    actor = await world.brand_admin()
    response = await actor.post("/agents", body)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(message)
    assert await agents_count(session) == 0


async def test_adding_an_agent_needs_a_token(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    anonymous = Actor(brand=actor.brand, user=actor.user, token="mr_nope", client=actor.client)
    assert (await anonymous.post("/agents", {"email": "a@example.com"})).status_code == 401
    assert await agents_count(session) == 0
