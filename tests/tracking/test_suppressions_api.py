"""A brand's suppression list: listed, searched and paged by its members; lifted by its Admins."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.links import unsubscribe_token
from tests.support.campaigns import received, schedule
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import Actor, World

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def _suppressed(
    session: AsyncSession, brand: uuid.UUID, *rows: tuple[str, str, str | None], at: datetime = T0
) -> None:
    """Suppressions as the webhooks and the unsubscribe page leave them, one minute apart in the order given."""
    for n, (email, reason, detail) in enumerate(rows):
        await session.execute(
            text(
                "INSERT INTO suppressions (brand, email, reason, detail, created_at) "
                "VALUES (:brand, :email, :reason, :detail, :at)"
            ),
            {"brand": brand, "email": email, "reason": reason, "detail": detail, "at": at + timedelta(minutes=n)},
        )
    await session.commit()


def _emails(answer: dict[str, Any]) -> list[str]:
    return [item["email"] for item in answer["data"]]


async def _list(actor: Actor, brand: uuid.UUID | None = None, **params: Any) -> dict[str, Any]:
    response = await actor.get(f"/brands/{brand or actor.brand}/suppressions", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_the_list_is_newest_first_with_reason_and_detail(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    other = await world.brand_admin()
    await _suppressed(
        session,
        admin.brand,
        ("ann@example.com", "unsubscribed", None),
        ("bob@example.com", "bounced", "550 5.1.1 mailbox unknown"),
        ("cy@example.com", "complained", None),
    )
    await _suppressed(session, other.brand, ("dee@example.com", "bounced", None))

    answer = await _list(admin)
    assert answer["info"] == {"count": 3, "total": 3}
    assert answer["data"] == [
        {"type": "suppression", "email": "cy@example.com", "reason": "complained", "detail": None,
         "created_at": (T0 + timedelta(minutes=2)).timestamp()},
        {"type": "suppression", "email": "bob@example.com", "reason": "bounced",
         "detail": "550 5.1.1 mailbox unknown", "created_at": (T0 + timedelta(minutes=1)).timestamp()},
        {"type": "suppression", "email": "ann@example.com", "reason": "unsubscribed", "detail": None,
         "created_at": T0.timestamp()},
    ]  # fmt: skip


async def test_paging_covers_every_suppression_once(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    addresses = [f"r{n:02d}@example.com" for n in range(7)]
    await _suppressed(session, admin.brand, *((a, "unsubscribed", None) for a in addresses))
    # Two made in one transaction share created_at: the order between them is still fixed.
    await _suppressed(session, admin.brand, ("tie-b@example.com", "bounced", None), at=T0 + timedelta(hours=1))
    await _suppressed(session, admin.brand, ("tie-a@example.com", "bounced", None), at=T0 + timedelta(hours=1))

    pages = [await _list(admin, start=start, limit=3) for start in (0, 3, 6, 9)]
    assert [p["info"] for p in pages] == [
        {"count": 3, "total": 9}, {"count": 3, "total": 9}, {"count": 3, "total": 9}, {"count": 0, "total": 9},
    ]  # fmt: skip
    seen = [email for page in pages for email in _emails(page)]
    assert seen == ["tie-a@example.com", "tie-b@example.com", *reversed(addresses)]


async def test_q_finds_part_of_an_address_in_any_case_and_its_wildcards_are_literal(
    world: World, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    await _suppressed(
        session,
        admin.brand,
        ("ann.lee@example.com", "unsubscribed", None),
        ("annie@other.org", "bounced", None),
        ("bob_smith@example.com", "bounced", None),
        ("bobxsmith@example.com", "bounced", None),
        ("100%real@example.com", "complained", None),
        ("back\\slash@example.com", "complained", None),
    )
    assert _emails(await _list(admin, q="ANN")) == ["annie@other.org", "ann.lee@example.com"]
    assert _emails(await _list(admin, q=" Ann.Lee ")) == ["ann.lee@example.com"]
    assert _emails(await _list(admin, q="OTHER.ORG")) == ["annie@other.org"]
    assert _emails(await _list(admin, q="b_s")) == ["bob_smith@example.com"]
    assert _emails(await _list(admin, q="%")) == ["100%real@example.com"]
    assert _emails(await _list(admin, q="\\")) == ["back\\slash@example.com"]
    assert (await _list(admin, q="nobody"))["info"] == {"count": 0, "total": 0}
    answer = await _list(admin, q="example.com", limit=2)
    assert answer["info"] == {"count": 2, "total": 5}


async def test_bad_paging_and_search_name_the_field(world: World) -> None:
    admin = await world.brand_admin()
    for params, field in (({"limit": 0}, "limit"), ({"start": -1}, "start"), ({"q": ""}, "q"),
                          ({"q": "x" * 255}, "q"), ({"q": "a\x00b"}, "q")):  # fmt: skip
        response = await admin.get(f"/brands/{admin.brand}/suppressions", params=params)
        assert response.status_code == 400, (params, response.text)
        assert field in response.json()["message"], response.text


async def test_members_of_the_brand_or_a_parent_brand_read_it_and_others_are_refused(
    world: World, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin, role="Agent")
    child = admin.data(await admin.post("/brands", {"name": "Team", "parent": str(admin.brand)}))["id"]
    await _suppressed(session, uuid.UUID(child), ("ann@example.com", "unsubscribed", None))
    await _suppressed(session, admin.brand, ("bob@example.com", "bounced", None))

    assert _emails(await _list(agent)) == ["bob@example.com"]
    # The parent brand's people see its teams' lists too.
    assert _emails(await _list(agent, uuid.UUID(child))) == ["ann@example.com"]

    stranger = await world.brand_admin()
    for brand in (admin.brand, child, uuid.uuid4()):
        response = await stranger.get(f"/brands/{brand}/suppressions")
        assert response.status_code == 403, response.text
        assert response.json()["message"] == "brand: you are not a member of this brand"
    assert (await world.client.get(f"/brands/{admin.brand}/suppressions")).status_code == 401


async def _suppressions(session: AsyncSession) -> list[tuple[Any, ...]]:
    rows = await session.execute(text("SELECT brand, email FROM suppressions ORDER BY email"))
    return [tuple(row) for row in rows]


async def test_only_an_admin_of_the_brand_lifts_a_suppression(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin, role="Agent")
    stranger = await world.brand_admin()
    await _suppressed(session, admin.brand, ("ann@example.com", "unsubscribed", None))
    await _suppressed(session, stranger.brand, ("bob@example.com", "unsubscribed", None))
    everything = [(admin.brand, "ann@example.com"), (stranger.brand, "bob@example.com")]

    response = await agent.delete(f"/brands/{admin.brand}/suppressions/ann@example.com")
    assert response.status_code == 403, response.text
    assert response.json()["message"] == "brand: only an Admin of this brand may do this"
    response = await stranger.delete(f"/brands/{admin.brand}/suppressions/ann@example.com")
    assert response.status_code == 403, response.text
    # Another brand's address, named under one's own brand, is not there to lift.
    response = await stranger.delete(f"/brands/{stranger.brand}/suppressions/ann@example.com")
    assert response.status_code == 404, response.text
    assert response.json() == {"code": "ResourceNotFound", "message": "address: is not suppressed in this brand"}
    response = await admin.delete(f"/brands/{admin.brand}/suppressions/bob@example.com")
    assert response.status_code == 404, response.text
    await session.rollback()
    assert await _suppressions(session) == everything

    # Any case and stray spaces name the same address.
    response = await admin.delete(f"/brands/{admin.brand}/suppressions/%20Ann@Example.COM%20")
    assert response.status_code == 204, response.text
    assert response.content == b""
    await session.rollback()
    assert await _suppressions(session) == [(stranger.brand, "bob@example.com")]
    response = await admin.delete(f"/brands/{admin.brand}/suppressions/ann@example.com")
    assert response.status_code == 404, response.text


async def test_a_lifted_address_is_mailed_again_and_a_contact_keeps_its_unsubscribed_tag(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    await _suppressed(session, admin.brand, ("ann@example.com", "bounced", "550 mailbox full"))
    await world.contacts(admin, [{"emails": ["cy@example.com"], "tags": ["Buyer"]}])
    token = unsubscribe_token(app.state.secret_box, admin.brand, "cy@example.com")
    assert (await admin.client.post(f"/unsubscribe/{token}")).status_code == 200
    to = [{"recipient_type": "Email", "email": a} for a in ("ann@example.com", "bob@example.com", "cy@example.com")]

    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            first = await schedule(admin, to=to)
            await wait_until_sent(app.state.sessionmaker, first["id"])
            assert received(server) == ["bob@example.com"]

            for address in ("ann@example.com", "cy@example.com"):
                response = await admin.delete(f"/brands/{admin.brand}/suppressions/{address}")
                assert response.status_code == 204, response.text
            server.messages.clear()
            second = await schedule(admin, to=to)
            await wait_until_sent(app.state.sessionmaker, second["id"])
    # The tag is the contact's own record: lifting the suppression leaves it, and it still keeps
    # the contact's address out until it is removed on the contact.
    assert received(server) == ["ann@example.com", "bob@example.com"]
    tags = await session.scalar(text("SELECT tags FROM contacts WHERE brand = :b"), {"b": admin.brand})
    assert tags == ["Buyer", "Unsubscribed"]
    assert (await _list(admin))["info"]["total"] == 0
