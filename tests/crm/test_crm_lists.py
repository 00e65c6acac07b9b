"""POST /brands/:brand/lists and POST /brands/:brand/lists/:list/members."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import Contact, CrmList, CrmListMember
from tests.support.world import World


async def members_of(session: AsyncSession, list_id: str) -> set[str]:
    rows = await session.scalars(select(CrmListMember.contact).where(CrmListMember.list == uuid.UUID(list_id)))
    return {str(r) for r in rows}


async def lists_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(CrmList)) or 0)


async def test_create_a_list_with_members(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    a, b, _ = await world.contacts(actor, [{}, {}, {}])
    response = await actor.post(f"/brands/{actor.brand}/lists", {"name": " Open house ", "members": [a["id"], b["id"]]})
    created = actor.data(response)
    assert created["type"] == "crm_list"
    assert created["name"] == "Open house"
    assert created["brand"] == str(actor.brand)
    assert created["members_count"] == 2
    assert isinstance(created["created_at"], float) and created["deleted_at"] is None

    row = (await session.execute(select(CrmList.__table__).where(CrmList.id == uuid.UUID(created["id"])))).one()
    assert (row.name, row.brand) == ("Open house", actor.brand)
    assert await members_of(session, created["id"]) == {a["id"], b["id"]}


async def test_a_list_may_start_empty_and_repeated_members_count_once(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    assert (await world.crm_list(actor, "Empty"))["members_count"] == 0
    contact = await world.contact(actor)
    twice = await world.crm_list(actor, members=[contact, contact])
    assert twice["members_count"] == 1
    assert await members_of(session, twice["id"]) == {contact["id"]}


async def test_adding_members_is_idempotent(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    a, b, c = await world.contacts(actor, [{}, {}, {}])
    crm_list = await world.crm_list(actor, members=[a])
    path = f"/brands/{actor.brand}/lists/{crm_list['id']}/members"

    added = actor.data(await actor.post(path, {"members": [a["id"], b["id"]]}))
    assert added["id"] == crm_list["id"] and added["type"] == "crm_list"
    assert added["members_count"] == 2
    assert isinstance(added["updated_at"], float)

    again = actor.data(await actor.post(path, {"members": [b["id"], a["id"]]}))
    assert again["members_count"] == 2
    assert again["updated_at"] == added["updated_at"], "re-adding changes nothing"

    final = actor.data(await actor.post(path, {"members": [c["id"]]}))
    assert final["members_count"] == 3
    assert await members_of(session, crm_list["id"]) == {a["id"], b["id"], c["id"]}


async def test_deleted_contacts_are_not_counted(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    a, b = await world.contacts(actor, [{}, {}])
    crm_list = await world.crm_list(actor, members=[a, b])
    await world.delete_contact(b)
    path = f"/brands/{actor.brand}/lists/{crm_list['id']}/members"
    assert actor.data(await actor.post(path, {"members": [a["id"]]}))["members_count"] == 1


async def _bad_member_cases(world: World, session: AsyncSession) -> tuple[Any, list[tuple[Any, str]]]:
    actor = await world.brand_admin()
    mine = await world.contact(actor)
    other = await world.brand_admin()
    theirs = await world.contact(other)
    deleted = await world.contact(actor)
    await session.execute(update(Contact).where(Contact.id == uuid.UUID(deleted["id"])).values(deleted_at=func.now()))
    await session.commit()
    cases = [
        ([mine["id"], str(uuid.uuid4())], "members.1: "),
        ([theirs["id"]], "members.0: "),
        ([mine["id"], mine["id"], deleted["id"]], "members.2: "),
        (["not-a-uuid"], "members.0: "),
        ([7], "members.0: "),
        ("abc", "members: "),
    ]
    return actor, cases


async def test_members_must_be_live_contacts_of_the_brand(world: World, session: AsyncSession) -> None:
    actor, cases = await _bad_member_cases(world, session)
    for members, message in cases:
        response = await actor.post(f"/brands/{actor.brand}/lists", {"name": "L", "members": members})
        assert response.status_code == 400, (members, response.text)
        assert response.json()["message"].startswith(message), (members, response.text)
    assert await lists_count(session) == 0


async def test_added_members_must_be_live_contacts_of_the_brand(world: World, session: AsyncSession) -> None:
    actor, cases = await _bad_member_cases(world, session)
    crm_list = await world.crm_list(actor)
    path = f"/brands/{actor.brand}/lists/{crm_list['id']}/members"
    for members, message in [*cases, ([], "members: ")]:
        response = await actor.post(path, {"members": members})
        assert response.status_code == 400, (members, response.text)
        assert response.json()["message"].startswith(message), (members, response.text)
    assert await members_of(session, crm_list["id"]) == set()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"members": []}, "name: "),
        ({"name": "", "members": []}, "name: "),
        ({"name": 5}, "name: "),
        ({"name": "L", "owner": "me"}, "owner: "),
        ({"name": "L", "members": None}, "members: "),
        (["L"], "body: "),
    ],
)
async def test_bad_list_bodies_are_refused(world: World, session: AsyncSession, body: Any, message: str) -> None:
    actor = await world.brand_admin()
    response = await actor.post(f"/brands/{actor.brand}/lists", body)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(message)
    assert await lists_count(session) == 0


async def test_another_brands_list_is_not_found_and_its_brand_forbidden(world: World, session: AsyncSession) -> None:
    owner = await world.brand_admin()
    contact = await world.contact(owner)
    crm_list = await world.crm_list(owner, "Owner's secret list", [contact])
    stranger = await world.brand_admin()
    theirs = await world.contact(stranger)

    via_own_brand = await stranger.post(
        f"/brands/{stranger.brand}/lists/{crm_list['id']}/members", {"members": [theirs["id"]]}
    )
    assert via_own_brand.status_code == 404
    assert "secret" not in via_own_brand.text

    via_their_brand = await stranger.post(
        f"/brands/{owner.brand}/lists/{crm_list['id']}/members", {"members": [contact["id"]]}
    )
    assert via_their_brand.status_code == 403
    created = await stranger.post(f"/brands/{owner.brand}/lists", {"name": "Mine now", "members": []})
    assert created.status_code == 403

    assert await members_of(session, crm_list["id"]) == {contact["id"]}
    assert await lists_count(session) == 1


async def test_an_unknown_list_is_not_found(world: World) -> None:
    actor = await world.brand_admin()
    contact = await world.contact(actor)
    response = await actor.post(f"/brands/{actor.brand}/lists/{uuid.uuid4()}/members", {"members": [contact["id"]]})
    assert response.status_code == 404
    assert response.json()["message"].startswith("list: ")
    bad_id = await actor.post(f"/brands/{actor.brand}/lists/nope/members", {"members": [contact["id"]]})
    assert bad_id.status_code == 400
    assert bad_id.json()["message"].startswith("list: ")
