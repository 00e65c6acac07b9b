"""POST and GET /brands/:brand/contacts: what the API answers and what the database then holds."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import Contact
from tests.support.world import Actor, World


async def stored(session: AsyncSession, brand: uuid.UUID) -> list[Any]:
    rows = await session.execute(select(Contact.__table__).where(Contact.brand == brand))
    return list(rows.mappings())


async def count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Contact)) or 0)


async def test_bulk_create_answers_each_contact_in_order_and_stores_it(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    items: list[dict[str, Any]] = [
        {
            "emails": ["Ann@Example.com", "ann.work@example.com"],
            "first_name": "Ann",
            "last_name": "Lee",
            "tags": ["Buyer", "VIP"],
            "partner_email": "bob@example.com",
            "parked": True,
            "profile_image_url": "https://img.example.com/ann.png",
        },
        {"emails": ["solo@example.com"]},
        {"first_name": "No", "last_name": "Email"},
    ]
    before = time.time()
    created = await world.contacts(actor, items)

    assert [c["type"] for c in created] == ["contact"] * 3
    ann, solo, nomail = created
    assert ann["email"] == "Ann@Example.com"
    assert ann["emails"] == ["Ann@Example.com", "ann.work@example.com"]
    assert ann["display_name"] == "Ann Lee"
    assert ann["tags"] == ["Buyer", "VIP"]
    assert ann["partner_email"] == "bob@example.com"
    assert ann["parked"] is True
    assert ann["profile_image_url"] == "https://img.example.com/ann.png"
    assert ann["brand"] == str(actor.brand)
    assert isinstance(ann["created_at"], float) and ann["created_at"] >= before - 5
    assert ann["updated_at"] is None and ann["deleted_at"] is None
    assert solo["display_name"] == "solo@example.com" and solo["tags"] == [] and solo["parked"] is False
    assert nomail["email"] is None and nomail["emails"] == [] and nomail["display_name"] == "No Email"

    rows = {str(r["id"]): r for r in await stored(session, actor.brand)}
    assert set(rows) == {c["id"] for c in created}
    row = rows[ann["id"]]
    assert row["emails"] == ["Ann@Example.com", "ann.work@example.com"]
    assert (row["first_name"], row["last_name"], row["partner_email"]) == ("Ann", "Lee", "bob@example.com")
    assert row["tags"] == ["Buyer", "VIP"] and row["parked"] is True
    assert row["created_at"].timestamp() == pytest.approx(ann["created_at"])


async def test_the_answer_keeps_the_order_contacts_were_sent_in(world: World) -> None:
    actor = await world.brand_admin()
    items = [{"emails": [f"c{i:03}@example.com"]} for i in range(300)]
    created = await world.contacts(actor, items)
    assert [c["email"] for c in created] == [i["emails"][0] for i in items]


async def test_ten_thousand_contacts_in_one_call(world: World, app: FastAPI, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    items = [
        {
            "emails": [f"c{i}@example.com"],
            "first_name": f"C{i}",
            "tags": ["Import"],
            "partner_email": f"p{i}@example.com",
        }
        for i in range(10_000)
    ]
    # Counted at the driver: a per-contact loop (or a per-row executemany) would show thousands.
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.append(statement)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        response = await actor.post(f"/brands/{actor.brand}/contacts", {"contacts": items})
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    created = actor.data(response)
    assert len(created) == 10_000
    assert created[9_999]["email"] == "c9999@example.com"
    assert await count(session) == 10_000
    inserts = [s for s in statements if "INSERT INTO contacts" in s]
    assert len(inserts) == 1, inserts
    assert len(statements) < 20, statements


def _bulk(n: int, bad: Any, at: int = 0) -> dict[str, Any]:
    contacts: list[Any] = [{"emails": [f"ok{i}@example.com"]} for i in range(n)]
    contacts[at] = bad
    return {"contacts": contacts}


BAD_BODIES = [
    pytest.param(_bulk(5, {"emails": ["not-an-address"]}, at=3), "contacts.3.emails.0: is not a valid", id="email"),
    pytest.param(_bulk(2, {"emails": ["a@example.com", "b@"]}, at=1), "contacts.1.emails.1: ", id="second-email"),
    pytest.param(_bulk(1, {"emails": "a@example.com"}), "contacts.0.emails: ", id="emails-not-list"),
    pytest.param(_bulk(1, {"partner_email": "nope"}), "contacts.0.partner_email: ", id="partner"),
    pytest.param(_bulk(1, {"tags": ["ok", " "]}), "contacts.0.tags.1: ", id="blank-tag"),
    pytest.param(_bulk(1, {"tags": ["ok", 7]}), "contacts.0.tags.1: ", id="tag-not-string"),
    pytest.param(_bulk(1, {"tags": "VIP"}), "contacts.0.tags: ", id="tags-not-list"),
    pytest.param(_bulk(1, {"parked": "true"}), "contacts.0.parked: ", id="parked-string"),
    pytest.param(_bulk(1, {"first_name": 5}), "contacts.0.first_name: ", id="name-number"),
    pytest.param(_bulk(1, {"first_name": "x" * 201}), "contacts.0.first_name: ", id="name-too-long"),
    pytest.param(_bulk(1, {"first_name": "a\x00b"}), "contacts.0.first_name: ", id="nul"),
    pytest.param(_bulk(2, {"nickname": "x"}, at=1), "contacts.1.nickname: ", id="unknown-field"),
    pytest.param(_bulk(1, None), "contacts.0: ", id="null-item"),
    pytest.param({"contacts": []}, "contacts: ", id="empty"),
    pytest.param({"contacts": [{}] * 10_001}, "contacts: ", id="over-10000"),
    pytest.param({"contacts": {"emails": []}}, "contacts: ", id="contacts-object"),
    pytest.param({}, "contacts: ", id="missing"),
    pytest.param({"contacts": [{}], "brand": "x"}, "brand: ", id="extra-top-level"),
    pytest.param([], "body: ", id="array-body"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
async def test_bad_contacts_are_refused_naming_the_field_and_nothing_is_written(
    world: World, session: AsyncSession, body: Any, message: str
) -> None:
    actor = await world.brand_admin()
    response = await actor.post(f"/brands/{actor.brand}/contacts", body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "BadRequest"
    assert response.json()["message"].startswith(message)
    assert await count(session) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"contacts": [{"emails": ["a@example.com"]}', "body: malformed JSON"),
        (b'{"contacts": [{"first_name": "\\ud800"}]}', "contacts.0.first_name: "),
        (b"", "body: "),
    ],
    ids=["truncated", "lone-surrogate", "empty"],
)
async def test_unreadable_json_is_a_400(world: World, session: AsyncSession, content: bytes, message: str) -> None:
    actor = await world.brand_admin()
    response = await actor.post(
        f"/brands/{actor.brand}/contacts", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(message)
    assert await count(session) == 0


async def test_an_agent_of_the_brand_may_create_contacts(world: World) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin, role="Agent")
    created = await world.contacts(agent, [{"emails": ["x@example.com"]}])
    assert created[0]["brand"] == str(admin.brand)


async def test_list_is_newest_first_with_the_true_total_and_pages(world: World) -> None:
    actor = await world.brand_admin()
    first = await world.contacts(actor, [{"emails": [f"old{i}@example.com"]} for i in range(3)])
    newest = await world.contact(actor, "new@example.com")

    page = await actor.get(f"/brands/{actor.brand}/contacts", params={"limit": 2})
    assert page.status_code == 200
    body = page.json()
    assert body["code"] == "OK"
    assert body["info"] == {"count": 2, "total": 4}
    assert body["data"][0]["id"] == newest["id"]
    assert body["data"][0]["type"] == "contact"

    rest = (await actor.get(f"/brands/{actor.brand}/contacts", params={"start": 2, "limit": 2})).json()
    assert rest["info"] == {"count": 2, "total": 4}
    seen = [c["id"] for c in body["data"] + rest["data"]]
    assert sorted(seen) == sorted([c["id"] for c in first] + [newest["id"]])

    beyond = (await actor.get(f"/brands/{actor.brand}/contacts", params={"start": 10})).json()
    assert beyond["data"] == [] and beyond["info"] == {"count": 0, "total": 4}


async def test_the_default_page_is_100(world: World) -> None:
    actor = await world.brand_admin()
    await world.contacts(actor, [{} for _ in range(150)])
    body = (await actor.get(f"/brands/{actor.brand}/contacts")).json()
    assert body["info"] == {"count": 100, "total": 150}


async def test_tag_filter_is_case_insensitive(world: World) -> None:
    actor = await world.brand_admin()
    vip, _, both = await world.contacts(actor, [{"tags": ["VIP"]}, {"tags": ["Buyer"]}, {"tags": ["buyer", "vip "]}])
    body = (await actor.get(f"/brands/{actor.brand}/contacts", params={"tag": "vip"})).json()
    assert sorted(c["id"] for c in body["data"]) == sorted([vip["id"], both["id"]])
    assert body["info"]["total"] == 2
    none = (await actor.get(f"/brands/{actor.brand}/contacts", params={"tag": "Seller"})).json()
    assert none["data"] == [] and none["info"]["total"] == 0


async def test_deleted_contacts_are_never_listed(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    gone, kept = await world.contacts(actor, [{"tags": ["X"]}, {"tags": ["X"]}])
    await session.execute(update(Contact).where(Contact.id == uuid.UUID(gone["id"])).values(deleted_at=func.now()))
    await session.commit()
    for params in ({}, {"tag": "x"}):
        body = (await actor.get(f"/brands/{actor.brand}/contacts", params=params)).json()
        assert [c["id"] for c in body["data"]] == [kept["id"]]
        assert body["info"]["total"] == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"start": -1}, "start"),
        ({"start": 2**70}, "start"),
        ({"tag": ""}, "tag"),
        ({"tag": "a\x00"}, "tag"),
    ],
)
async def test_bad_list_parameters_are_a_400_naming_them(world: World, params: dict[str, Any], field: str) -> None:
    actor = await world.brand_admin()
    response = await actor.get(f"/brands/{actor.brand}/contacts", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(f"{field}: ")


async def test_another_brand_can_neither_create_nor_read_contacts(world: World, session: AsyncSession) -> None:
    owner = await world.brand_admin()
    await world.contact(owner, "private@example.com")
    stranger = await world.brand_admin()

    listing = await stranger.get(f"/brands/{owner.brand}/contacts")
    assert listing.status_code == 403
    assert "private@example.com" not in listing.text

    created = await stranger.post(f"/brands/{owner.brand}/contacts", {"contacts": [{"emails": ["x@example.com"]}]})
    assert created.status_code == 403
    assert await count(session) == 1

    unknown_brand = await stranger.get(f"/brands/{uuid.uuid4()}/contacts")
    assert unknown_brand.status_code == 403


async def test_contacts_need_a_token(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    anonymous = Actor(brand=actor.brand, user=actor.user, token="mr_wrong", client=actor.client)
    assert (await anonymous.get(f"/brands/{actor.brand}/contacts")).status_code == 401
    response = await anonymous.post(f"/brands/{actor.brand}/contacts", {"contacts": [{}]})
    assert response.status_code == 401
    assert await count(session) == 0
