"""A brand's list of campaigns answers from serialised campaigns kept by the version of their rows: the same
campaigns as a read of each, and never one older than the row, whatever changed it."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.answers import AnswerCache
from tests.support.campaigns import campaign
from tests.support.world import Actor, World


async def listed(actor: Actor, **params: Any) -> dict[str, Any]:
    answer = await actor.get(f"/brands/{actor.brand}/emails/campaigns", params={"status": "any", **params})
    assert answer.status_code == 200, answer.text
    return {item["id"]: item for item in answer.json()["data"]}


async def test_a_listed_campaign_is_the_campaign_as_read_alone(world: World) -> None:
    admin = await world.brand_admin()
    made = [admin.data(await admin.post("/emails", campaign(subject=f"Campaign {n}"))) for n in range(3)]
    for _ in range(2):  # once serialised afresh, once from what was kept
        found = await listed(admin)
        assert list(found) == [m["id"] for m in reversed(made)]
        for item in made:
            assert found[item["id"]] == admin.data(await admin.get(f"/emails/{item['id']}"))
    # With associations asked for, the campaigns are serialised as before, with the same fields.
    both = await listed(admin, **{"associations[]": "email_campaign.template"})
    assert {k: {f: v for f, v in c.items() if f != "template"} for k, c in both.items()} == await listed(admin)


async def test_a_change_to_a_campaign_shows_at_once(app: FastAPI, world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    made = admin.data(await admin.post("/emails", campaign(subject="Before")))
    assert (await listed(admin))[made["id"]]["subject"] == "Before"
    assert len(app.state.campaign_answers) > 0

    assert (await admin.put(f"/emails/{made['id']}", campaign(subject="After"))).status_code == 200
    assert (await listed(admin))[made["id"]]["subject"] == "After"

    # The sender's counters, written as the sender writes them, outside any API request.
    await session.execute(text("UPDATE email_campaigns SET sent = 7, delivered = 5 WHERE id = :id"), {"id": made["id"]})
    await session.commit()
    counted = (await listed(admin))[made["id"]]
    assert (counted["sent"], counted["delivered"]) == (7, 5)

    # Two changes in one transaction leave one version, the last.
    await session.execute(text("UPDATE email_campaigns SET sent = 8 WHERE id = :id"), {"id": made["id"]})
    await session.execute(text("UPDATE email_campaigns SET sent = 9 WHERE id = :id"), {"id": made["id"]})
    await session.commit()
    assert (await listed(admin))[made["id"]]["sent"] == 9

    await admin.delete(f"/emails/{made['id']}")
    assert made["id"] not in await listed(admin)


async def test_the_sender_confirming_their_address_shows_at_once(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    made = admin.data(await admin.post("/emails", campaign()))
    assert (await listed(admin))[made["id"]]["from_address_verified"] is True
    await session.execute(text("UPDATE users SET email_confirmed = false WHERE id = :id"), {"id": admin.user})
    await session.commit()
    assert (await listed(admin))[made["id"]]["from_address_verified"] is False
    await session.execute(text("UPDATE users SET email_confirmed = true WHERE id = :id"), {"id": admin.user})
    await session.commit()
    assert (await listed(admin))[made["id"]]["from_address_verified"] is True


def test_the_cache_keeps_one_version_a_campaign_and_is_bounded_by_bytes() -> None:
    cache = AnswerCache(max_bytes=100, max_entry=40)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(first, "1:true", b"a" * 30)
    assert cache.get(first, "1:true") == b"a" * 30
    assert cache.get(first, "2:true") is None and cache.get(first, "1:false") is None
    cache.put(first, "2:true", b"b" * 30)  # a new version replaces the old
    assert cache.get(first, "1:true") is None and len(cache) == 1
    cache.put(second, "1:true", b"c" * 40)
    cache.put(third, "1:true", b"d" * 40)  # 110 bytes: the oldest goes
    assert cache.get(first, "2:true") is None
    assert cache.get(second, "1:true") == b"c" * 40 and cache.get(third, "1:true") == b"d" * 40
    cache.put(second, "2:true", b"e" * 41)  # too large to keep: and its older version is gone too
    assert cache.get(second, "1:true") is None and cache.get(second, "2:true") is None and len(cache) == 1


async def recipients_page(actor: Actor, campaign_id: str, **params: Any) -> list[dict[str, Any]]:
    answer = await actor.get(f"/emails/{campaign_id}/emails", params=params)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    assert answer.json()["info"] == {"count": len(rows), "total": 3}
    return rows


async def with_recipient_rows(world: World, admin: Actor, session: AsyncSession) -> tuple[str, dict[str, Any]]:
    """A campaign with three recipient rows, as sending leaves them, one of them a contact's; the contact."""
    made = admin.data(await admin.post("/emails", campaign()))
    contact = await world.contact(admin, "cara@example.com", first_name="Cara", last_name="Lee")
    for seq, address in enumerate(("ann@example.com", "bob@example.com", "cara@example.com"), start=1):
        await session.execute(
            text(
                "INSERT INTO email_campaign_emails (campaign, seq, email_address, send_type, contact) "
                "VALUES (:c, :seq, :address, 'To', :contact)"
            ),
            {"c": made["id"], "seq": seq, "address": address, "contact": contact["id"] if seq == 3 else None},
        )
    await session.commit()
    return made["id"], contact


async def test_the_recipients_page_is_the_page_as_serialised_with_its_emails(
    world: World, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    campaign_id, _ = await with_recipient_rows(world, admin, session)
    for params in ({}, {"order": "-full_name"}, {"start": "1", "limit": "1"}):
        with_emails = await recipients_page(
            admin, campaign_id, **{"associations[]": "email_campaign_email.email", **params}
        )
        for _ in range(2):  # once serialised afresh, once from what was kept
            rows = await recipients_page(admin, campaign_id, **params)
            assert rows == [{k: v for k, v in row.items() if k != "email"} for row in with_emails]
    assert [r["full_name"] for r in await recipients_page(admin, campaign_id)] == [None, None, "Cara Lee"]


async def test_a_change_to_a_recipient_row_or_its_contact_shows_at_once(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    campaign_id, contact = await with_recipient_rows(world, admin, session)
    await recipients_page(admin, campaign_id)

    await session.execute(
        text("UPDATE email_campaign_emails SET delivered = 1, opened = 2 WHERE email_address = 'bob@example.com'")
    )
    await session.commit()
    bob = (await recipients_page(admin, campaign_id))[1]
    assert (bob["email_address"], bob["delivered"], bob["opened"]) == ("bob@example.com", 1, 2)

    await session.execute(text("UPDATE contacts SET first_name = 'Carla' WHERE id = :id"), {"id": contact["id"]})
    await session.commit()
    assert (await recipients_page(admin, campaign_id))[2]["full_name"] == "Carla Lee"


async def test_the_recipients_page_of_a_campaign_not_the_callers_is_not_found(
    world: World, session: AsyncSession
) -> None:
    admin, stranger = await world.brand_admin(), await world.brand_admin()
    campaign_id, _ = await with_recipient_rows(world, admin, session)
    await recipients_page(admin, campaign_id)
    for params in ({}, {"order": "nonsense"}):
        refused = await stranger.get(f"/emails/{campaign_id}/emails", params=params)
        assert (refused.status_code, refused.json()["code"]) == (404, "ResourceNotFound")
    # An order not known, on the caller's own campaign: named as before.
    refused = await admin.get(f"/emails/{campaign_id}/emails", params={"order": "nonsense"})
    assert refused.status_code == 400 and refused.json()["message"].startswith("order: must be one of")
    await admin.delete(f"/emails/{campaign_id}")
    assert (await admin.get(f"/emails/{campaign_id}/emails")).status_code == 404
    # A campaign without recipient rows: an empty page, and its total.
    empty = admin.data(await admin.post("/emails", campaign()))
    answer = (await admin.get(f"/emails/{empty['id']}/emails")).json()
    assert (answer["data"], answer["info"]) == ([], {"count": 0, "total": 0})
