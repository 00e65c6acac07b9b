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
