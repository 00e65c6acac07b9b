"""email_campaign_recipient.contact, .list, .brand and .agent: a recipient row's contact, list, brand and
agent as the objects the CRM endpoints answer, only when asked for, read in one statement each."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.campaigns import campaign
from tests.support.statements import statements
from tests.support.world import Actor, World

NAMED = ("contact", "list", "brand", "agent")
RECIPIENTS = "email_campaign.recipients"


def asking(*names: str) -> dict[str, list[str]]:
    return {"associations[]": [RECIPIENTS, *(f"email_campaign_recipient.{name}" for name in names)]}


@dataclasses.dataclass
class Named:
    """What one campaign's recipients name, as the endpoints that created them answered."""

    contact: dict[str, Any]
    list: dict[str, Any]
    brand: dict[str, Any]
    agent: dict[str, Any]


async def named(world: World, admin: Actor, n: int = 0) -> Named:
    contact = await world.contact(admin, first_name=f"Jane{n}", last_name="Buyer", tags=["Buyer"])
    crm_list = await world.crm_list(admin, members=[contact])
    team = admin.data(await admin.post("/brands", {"name": f"Team {n}", "parent": str(admin.brand)}))
    return Named(contact=contact, list=crm_list, brand=team, agent=await world.agent(admin, full_name=f"Al {n}"))


def to(found: Named) -> list[dict[str, Any]]:
    return [
        {"recipient_type": "Contact", "contact": found.contact["id"]},
        {"recipient_type": "List", "list": found.list["id"]},
        {"recipient_type": "Brand", "brand": found.brand["id"]},
        {"recipient_type": "Agent", "agent": found.agent["id"]},
        # An address may name the contact it belongs to; it names no list, brand or agent.
        {"recipient_type": "Email", "email": "jane@example.com", "contact": found.contact["id"]},
        {"recipient_type": "Tag", "tag": "Buyer"},
    ]


def by_type(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows: list[dict[str, Any]] = answer["recipients"]
    return {row["recipient_type"]: row for row in rows}


async def test_without_the_associations_a_row_has_none_of_the_keys(world: World) -> None:
    admin = await world.brand_admin()
    made = admin.data(await admin.post("/emails", campaign(to=to(await named(world, admin)))))
    for answer in (
        admin.data(await admin.get(f"/emails/{made['id']}", params={"associations[]": RECIPIENTS})),
        admin.data(await admin.get(f"/brands/{admin.brand}/emails/campaigns", params={"associations[]": RECIPIENTS}))[
            0
        ],
    ):
        assert len(answer["recipients"]) == 6
        for row in answer["recipients"]:
            assert not set(row) & set(NAMED), row
    # The recipient associations alone expand nothing: there are no recipients to expand.
    only_named = [f"email_campaign_recipient.{name}" for name in NAMED]
    bare = admin.data(await admin.get(f"/emails/{made['id']}", params={"associations[]": only_named}))
    assert "recipients" not in bare


@pytest.mark.parametrize("name", NAMED)
async def test_each_association_expands_its_field_into_the_crm_object(world: World, name: str) -> None:
    admin = await world.brand_admin()
    found = await named(world, admin)
    made = admin.data(await admin.post("/emails", campaign(to=to(found))))

    rows = by_type(admin.data(await admin.get(f"/emails/{made['id']}", params=asking(name))))
    expected = getattr(found, name)
    naming = {"contact": {"Contact", "Email"}, "list": {"List"}, "brand": {"Brand"}, "agent": {"Agent"}}[name]
    for recipient_type, row in rows.items():
        # The very object the CRM endpoint answered: the same serialiser built both.
        assert row[name] == (expected if recipient_type in naming else None), (recipient_type, row)
        assert not set(row) & (set(NAMED) - {name}), row


async def test_all_four_together_on_a_brands_campaign_list(world: World) -> None:
    admin = await world.brand_admin()
    first, second = await named(world, admin, 1), await named(world, admin, 2)
    for found in (first, second):
        admin.data(await admin.post("/emails", campaign(to=to(found))))
    listed = admin.data(await admin.get(f"/brands/{admin.brand}/emails/campaigns", params=asking(*NAMED)))
    assert len(listed) == 2
    for answer in listed:
        rows = by_type(answer)
        found = first if rows["Agent"]["agent"]["id"] == first.agent["id"] else second
        assert rows["Contact"]["contact"] == rows["Email"]["contact"] == found.contact
        assert (rows["List"]["list"], rows["Brand"]["brand"]) == (found.list, found.brand)
        assert rows["List"]["list"]["members_count"] == 1
        assert all(rows["Tag"][name] is None for name in NAMED)


async def test_deleted_contacts_and_lists_read_null(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    found = await named(world, admin)
    made = admin.data(await admin.post("/emails", campaign(to=to(found))))
    await world.delete_contact(found.contact)
    await session.execute(text("UPDATE crm_lists SET deleted_at = now() WHERE id = :id"), {"id": found.list["id"]})
    await session.commit()

    rows = by_type(admin.data(await admin.get(f"/emails/{made['id']}", params=asking(*NAMED))))
    assert rows["Contact"]["contact"] is None and rows["Email"]["contact"] is None and rows["List"]["list"] is None
    # The rows themselves stay: what the campaign was written to is still there to see.
    assert rows["Contact"]["recipient_type"] == "Contact" and rows["Brand"]["brand"] == found.brand


async def test_another_brands_contact_or_list_is_never_shown(world: World, session: AsyncSession) -> None:
    admin, stranger = await world.brand_admin(), await world.brand_admin()
    found, theirs = await named(world, admin), await named(world, stranger)
    made = admin.data(await admin.post("/emails", campaign(to=to(found))))
    # The API refuses this on write; a row that names them anyway must not show them.
    for column in ("contact", "list"):
        await session.execute(
            text(
                f'UPDATE email_campaign_recipients SET "{column}" = :theirs WHERE campaign = :c AND "{column}" = :mine'
            ),
            {"theirs": getattr(theirs, column)["id"], "mine": getattr(found, column)["id"], "c": made["id"]},
        )
    await session.commit()

    rows = by_type(admin.data(await admin.get(f"/emails/{made['id']}", params=asking(*NAMED))))
    assert (rows["Contact"]["contact"], rows["Email"]["contact"], rows["List"]["list"]) == (None, None, None)
    assert "Jane" not in str(rows)


async def test_a_brand_is_shown_only_to_a_reader_with_a_role_in_it(world: World) -> None:
    broker = await world.brand_admin()
    team = broker.data(await broker.post("/brands", {"name": "Team", "parent": str(broker.brand)}))["id"]
    # The broker sends from the team to every agent of the whole brokerage.
    made = broker.data(
        await broker.post(
            "/emails",
            campaign(to=[{"recipient_type": "Brand", "brand": str(broker.brand)}]),
            headers={"X-Rechat-Brand": team},
        )
    )
    team_agent = await world.member(dataclasses.replace(broker, brand=uuid.UUID(team)), role="Agent")

    (row,) = broker.data(await broker.get(f"/emails/{made['id']}", params=asking("brand")))["recipients"]
    assert row["brand"]["id"] == str(broker.brand) and row["brand"]["type"] == "brand"
    (row,) = team_agent.data(await team_agent.get(f"/emails/{made['id']}", params=asking("brand")))["recipients"]
    assert row["brand"] is None


async def test_the_statements_do_not_grow_with_the_recipients(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = await world.brand_admin()
    few = admin.data(await admin.post("/emails", campaign(to=to(await named(world, admin)))))
    many_named = [await named(world, admin, n) for n in range(4)]
    many = admin.data(await admin.post("/emails", campaign(to=[item for found in many_named for item in to(found)])))

    async def counted(path: str) -> tuple[int, Any]:
        with statements(monkeypatch) as seen:
            response = await admin.get(path, params=asking(*NAMED))
        return len(seen), admin.data(response)

    (n_few, _), (n_many, answer) = await counted(f"/emails/{few['id']}"), await counted(f"/emails/{many['id']}")
    assert len(answer["recipients"]) == 24
    assert all(row["agent"] is not None for row in answer["recipients"] if row["recipient_type"] == "Agent")
    # The campaign, its recipients, and one statement per association.
    assert n_few == n_many == 6
    # Over a page of campaigns too: not one more for the second campaign.
    n_listed, listed = await counted(f"/brands/{admin.brand}/emails/campaigns")
    assert len(listed) == 2 and n_listed == 6

    # Associations no row names cost nothing.
    only_tags = admin.data(await admin.post("/emails", campaign(to=[{"recipient_type": "Tag", "tag": "Buyer"}])))
    n_tags, _ = await counted(f"/emails/{only_tags['id']}")
    assert n_tags == 2
