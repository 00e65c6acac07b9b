"""POST /brands/:brand/contacts/import: CSV as a multipart upload or as a text/csv body."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import Contact
from tests.support.world import Actor, World

CSV = (
    "email,first_name,last_name,tags,partner_email\n"
    "ann@example.com,Ann,Lee,Buyer;VIP,bob@example.com\n"
    '"carl@example.com; carl@work.example.com","Carl, Jr.",Diaz,,\n'
    "\n"
    "dee@example.com,,,  seller ; ;,\n"
)


async def upload(actor: Actor, content: bytes, *, name: str = "contacts.csv") -> httpx.Response:
    return await actor.post(f"/brands/{actor.brand}/contacts/import", files={"file": (name, content, "text/csv")})


async def raw(actor: Actor, content: bytes, content_type: str = "text/csv") -> httpx.Response:
    return await actor.post(
        f"/brands/{actor.brand}/contacts/import", content=content, headers={"Content-Type": content_type}
    )


async def count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Contact)) or 0)


def check_imported(created: list[dict[str, Any]]) -> None:
    assert [c["type"] for c in created] == ["contact"] * 3
    ann, carl, dee = created
    assert ann["emails"] == ["ann@example.com"] and ann["display_name"] == "Ann Lee"
    assert ann["tags"] == ["Buyer", "VIP"] and ann["partner_email"] == "bob@example.com"
    assert carl["emails"] == ["carl@example.com", "carl@work.example.com"]
    assert carl["first_name"] == "Carl, Jr." and carl["tags"] == [] and carl["partner_email"] is None
    assert dee["first_name"] is None and dee["display_name"] == "dee@example.com" and dee["tags"] == ["seller"]


@pytest.mark.parametrize("send", [upload, raw], ids=["multipart", "text-csv"])
async def test_import_creates_the_rows_of_the_file(world: World, session: AsyncSession, send: Any) -> None:
    actor = await world.brand_admin()
    response = await send(actor, CSV.encode())
    created = actor.data(response)
    check_imported(created)

    rows = (await session.execute(select(Contact.__table__).where(Contact.brand == actor.brand))).mappings().all()
    by_id = {str(r["id"]): r for r in rows}
    assert set(by_id) == {c["id"] for c in created}
    carl = by_id[created[1]["id"]]
    assert carl["emails"] == ["carl@example.com", "carl@work.example.com"]
    assert carl["last_name"] == "Diaz"


async def test_imported_contacts_are_listed_like_bulk_ones(world: World) -> None:
    actor = await world.brand_admin()
    imported = actor.data(await raw(actor, b"email,tags\nx@example.com,VIP\n"))
    listed = (await actor.get(f"/brands/{actor.brand}/contacts", params={"tag": "vip"})).json()["data"]
    assert listed == imported


async def test_a_byte_order_mark_and_header_case_do_not_matter(world: World) -> None:
    actor = await world.brand_admin()
    created = actor.data(await upload(actor, "\ufeffEmail , First_Name\nx@example.com,Xe\n".encode()))
    assert created[0]["email"] == "x@example.com" and created[0]["first_name"] == "Xe"


async def test_ten_thousand_rows_import(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    body = "email,first_name,tags\n" + "".join(f"c{i}@example.com,C{i},Import\n" for i in range(10_000))
    assert len(actor.data(await upload(actor, body.encode()))) == 10_000
    assert await count(session) == 10_000


BAD_FILES = [
    pytest.param("email,first_name\nok@example.com,A\nnope,B\n", "row 3, email: is not a valid", id="bad-email"),
    pytest.param("email,partner_email\nok@example.com,x@\n", "row 2, partner_email: ", id="bad-partner"),
    pytest.param("email,first_name\nok@example.com," + "x" * 201 + "\n", "row 2, first_name: ", id="long-name"),
    pytest.param("email,first_name\nok@example.com,A,extra\n", "row 2: ", id="extra-cell"),
    pytest.param("email,nickname\nok@example.com,A\n", "row 1: unknown column 'nickname'", id="unknown-column"),
    pytest.param("first_name\nAnn\n", "row 1: the header must have an 'email' column", id="no-email-column"),
    pytest.param("email,email\na@example.com,b@example.com\n", "row 1: column 'email' appears twice", id="dup-column"),
    pytest.param("", "file: ", id="empty"),
    pytest.param("email\n", "contacts: ", id="header-only"),
    pytest.param("email\n" + "x@example.com\n" * 10_001, "contacts: at most 10000", id="over-10000"),
    pytest.param('email,first_name\nok@example.com,"unterminated\n', "row ", id="bad-quoting"),
    pytest.param("email,first_name\nok@example.com,A\x00B\n", "row ", id="nul"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
@pytest.mark.parametrize("send", [upload, raw], ids=["multipart", "text-csv"])
async def test_a_bad_file_is_refused_naming_row_and_column_and_nothing_is_written(
    world: World, session: AsyncSession, send: Any, content: str, message: str
) -> None:
    actor = await world.brand_admin()
    response = await send(actor, content.encode())
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(message), response.json()["message"]
    assert await count(session) == 0


async def test_a_file_that_is_not_utf8_is_refused(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    latin1 = "email,first_name\nx@example.com,Zoë\n".encode("latin-1")
    assert (await upload(actor, latin1)).json()["message"] == "file: must be UTF-8 text"
    assert (await raw(actor, latin1)).json()["message"] == "body: must be UTF-8 text"
    assert await count(session) == 0


async def test_a_huge_body_is_refused_before_it_is_parsed(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    huge = b"email\n" + b"x" * (17 * 1024 * 1024)
    response = await raw(actor, huge)
    assert response.status_code == 413
    assert response.json()["message"].startswith("body: ")
    assert await count(session) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"json": {"contacts": []}}, "Content-Type: "),
        ({"files": {"upload": ("c.csv", b"email\nx@example.com\n")}}, "file: "),
        ({"data": {"file": "email\nx@example.com\n"}}, "file: "),
    ],
    ids=["json", "wrong-form-field", "form-text-not-file"],
)
async def test_the_csv_must_come_as_a_file_or_a_csv_body(
    world: World, session: AsyncSession, kwargs: dict[str, Any], message: str
) -> None:
    actor = await world.brand_admin()
    response = await actor.client.post(
        f"/brands/{actor.brand}/contacts/import", headers={"Authorization": f"Bearer {actor.token}"}, **kwargs
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(message)
    assert await count(session) == 0


async def test_another_brand_cannot_import_into_this_one(world: World, session: AsyncSession) -> None:
    owner = await world.brand_admin()
    stranger = await world.brand_admin()
    response = await stranger.post(
        f"/brands/{owner.brand}/contacts/import", files={"file": ("c.csv", b"email\nx@example.com\n", "text/csv")}
    )
    assert response.status_code == 403
    assert await count(session) == 0
