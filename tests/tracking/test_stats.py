"""GET /emails/:id/stats: counts unique and total, counted opens and clicks per hour, links, failures."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from fastapi import FastAPI

from mailroom.config import Settings
from mailroom.event_types import EVENT_TYPES
from tests.support.events import event, post_events, sent_campaign, settle_all, signed, use_signing_key
from tests.support.world import World


@pytest.fixture(autouse=True)
def _signing_key(app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    use_signing_key(app, settings, monkeypatch)


async def test_stats_of_a_campaign(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    people = ["ann@example.com", "bob@example.com", "cy@example.com", "dan@other.org", "eve@other.org"]
    sent = await sent_campaign(admin, app, settings, people)
    mid, a, b = sent.message_id, "https://example.com/a", "https://example.com/b"
    hour = 3600.0
    calls = [
        signed(event("opened", mid, "ann@example.com", after=hour)),
        signed(event("opened", mid, "ann@example.com", after=2 * hour)),
        signed(event("opened", mid, "bob@example.com", after=2 * hour, user_agent="Mozilla/5.0")),  # Apple's proxy
        signed(event("clicked", mid, "ann@example.com", after=2 * hour, url=a)),
        signed(event("clicked", mid, "ann@example.com", after=2 * hour + 5, url=a)),
        signed(event("clicked", mid, "bob@example.com", after=2 * hour, url=a)),
        signed(event("clicked", mid, "bob@example.com", after=2 * hour + 9, url=b)),
    ]
    for who, severity, message in (
        ("cy@example.com", "permanent", "5.1.1 No such user"),
        ("dan@other.org", "permanent", "5.1.1 No such user"),
        ("eve@other.org", "temporary", "4.2.2 Mailbox full"),
    ):
        failed = event("failed", mid, who, severity=severity)
        failed["delivery-status"] = {"message": message}
        calls.append(signed(failed))
    assert (await post_events(world.client, *calls)).status_code == 200
    await settle_all(app.state.sessionmaker)

    stats = admin.data(await admin.get(f"/emails/{sent.id}/stats"))
    assert stats["sent"] == 5 and stats["recipients_count"] == 5
    counts = stats["counts"]
    # Every event type the counters have, in their order: the shape lists them one by one.
    assert tuple(counts) == EVENT_TYPES
    assert counts["opened"] == {"unique": 1, "total": 3}
    assert counts["clicked"] == {"unique": 2, "total": 4}
    assert counts["failed"] == {"unique": 3, "total": 3}
    assert counts["accepted"] == {"unique": 5, "total": 5}
    assert counts["delivered"] == {"unique": 0, "total": 0}
    # Per hour since sending, counted ones only: the proxy's open is not there.
    hourly = stats["hourly"]
    assert [(h["opened"], h["clicked"]) for h in hourly] == [(1, 0), (1, 4)]
    # An hour after sending, then the next hour (one more if sending ended just before the hour turned).
    assert hourly[0]["since_sending"] in (1, 2) and hourly[1]["since_sending"] == hourly[0]["since_sending"] + 1
    assert all(datetime.fromisoformat(h["hour"]).minute == 0 for h in hourly)
    assert stats["links"] == [{"url": a, "unique": 2, "total": 3}, {"url": b, "unique": 1, "total": 1}]
    assert stats["failures"] == {
        "by_reason": [{"reason": "5.1.1 No such user", "recipients": 2},
                      {"reason": "4.2.2 Mailbox full", "recipients": 1}],
        "by_domain": [{"domain": "other.org", "recipients": 2}, {"domain": "example.com", "recipients": 1}],
    }  # fmt: skip


async def test_stats_of_another_brands_campaign_are_not_found(world: World, app: FastAPI, settings: Settings) -> None:
    owner = await world.brand_admin()
    stranger = await world.brand_admin()
    sent = await sent_campaign(owner, app, settings, ["ann@example.com"])
    answer = await stranger.get(f"/emails/{sent.id}/stats")
    assert answer.status_code == 404 and answer.json()["code"] == "ResourceNotFound"
    assert (await world.client.get(f"/emails/{sent.id}/stats")).status_code == 401
    assert (await owner.get(f"/emails/{uuid.uuid4()}/stats")).status_code == 404
    assert (await owner.get(f"/emails/{sent.id}/stats")).status_code == 200
    assert (await owner.delete(f"/emails/{sent.id}")).status_code == 204
    answer = await owner.get(f"/emails/{sent.id}/stats")
    assert answer.status_code == 404 and answer.json()["code"] == "ResourceNotFound"
