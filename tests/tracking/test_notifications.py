"""Notifications: what the settler's counted opens and clicks tell a campaign's sender, and reading them."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.tracking.activity import SettledActivity
from mailroom.tracking.notifications import notify
from tests.support.campaigns import schedule
from tests.support.events import DESKTOP, settle_all
from tests.support.sender import sent_over_smtp
from tests.support.world import Actor, World

ANN, BOB = "ann@example.com", "bob@example.com"


@dataclass
class Sent:
    """A campaign executed by the worker: its id and each recipient's campaign-email row."""

    id: uuid.UUID
    rows: dict[str, uuid.UUID]
    sender: str


async def _sent(actor: Actor, app: FastAPI, settings: Settings, *addresses: str) -> Sent:
    to = [{"recipient_type": "Email", "email": a} for a in addresses]
    made = await schedule(actor, to=to)
    server = await sent_over_smtp(app.state.sessionmaker, settings, made["id"])
    assert len(server.messages) == 1
    async with app.state.sessionmaker() as s:
        rows = await s.execute(
            text("SELECT email_address, id FROM email_campaign_emails WHERE campaign = :c"), {"c": made["id"]}
        )
        sender = await s.scalar(text("SELECT email FROM users WHERE id = :u"), {"u": actor.user})
    return Sent(id=uuid.UUID(made["id"]), rows={a: i for a, i in rows.all()}, sender=sender)


def _opened(sent: Sent, recipient: str, at: datetime) -> SettledActivity:
    return SettledActivity("opened", sent.id, sent.rows.get(recipient.lower()), recipient, None, at)


def _clicked(sent: Sent, recipient: str, url: str, at: datetime) -> SettledActivity:
    return SettledActivity("clicked", sent.id, sent.rows.get(recipient.lower()), recipient, url, at)


async def _notify(session: AsyncSession, *activity: SettledActivity) -> int:
    """What the settler does: notify() in its transaction, then commit."""
    told = await notify(session, activity)
    await session.commit()
    return told


async def _notifications(actor: Actor, **params: Any) -> list[dict[str, Any]]:
    response = await actor.get("/notifications", params=params)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _brief(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(kind, recipient, url, count, created_at, updated_at) of each notification, as listed."""
    return [(n["kind"], n["recipient"], n["url"], n["count"], n["created_at"], n["updated_at"]) for n in items]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


async def test_each_click_is_told_at_once(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await _sent(admin, app, settings, ANN, BOB)
    t = _now()
    assert await _notify(session, _clicked(sent, ANN, "https://example.com/a", t)) == 1
    assert (
        await _notify(
            session,
            _clicked(sent, ANN, "https://example.com/a", t + timedelta(seconds=5)),
            _clicked(sent, "Bob@Example.com", "https://example.com/b", t + timedelta(seconds=6)),
        )
        == 2
    )

    items = await _notifications(admin)
    assert _brief(items) == [
        ("clicked", BOB, "https://example.com/b", 1, (t + timedelta(seconds=6)).timestamp(),
         (t + timedelta(seconds=6)).timestamp()),
        ("clicked", ANN, "https://example.com/a", 1, (t + timedelta(seconds=5)).timestamp(),
         (t + timedelta(seconds=5)).timestamp()),
        ("clicked", ANN, "https://example.com/a", 1, t.timestamp(), t.timestamp()),
    ]  # fmt: skip
    first = items[-1]
    assert set(first) == {"type", "id", "kind", "campaign", "recipient", "url", "count", "created_at", "updated_at",
                          "seen_at"}  # fmt: skip
    assert (first["type"], first["campaign"], first["seen_at"]) == ("notification", str(sent.id), None)
    stored = await session.execute(text('SELECT campaign_email, brand, "user" FROM notifications ORDER BY created_at'))
    assert set(stored.all()) == {(sent.rows[ANN], admin.brand, admin.user), (sent.rows[BOB], admin.brand, admin.user)}


async def test_opens_of_one_recipient_less_than_5_minutes_apart_are_one_notification(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await _sent(admin, app, settings, ANN, BOB)
    t = _now()

    def m(minutes: float) -> datetime:
        return t + timedelta(minutes=minutes)

    # One batch: Ann at 0, 1 and 4 minutes, then 10 (a new group); Bob at 2.
    told = await _notify(
        session, _opened(sent, ANN, m(4)), _opened(sent, ANN, m(0)), _opened(sent, BOB, m(2)),
        _opened(sent, ANN, m(1)), _opened(sent, ANN, m(10)),
    )  # fmt: skip
    assert told == 3
    assert _brief(await _notifications(admin)) == [
        ("opened", ANN, None, 1, m(10).timestamp(), m(10).timestamp()),
        ("opened", BOB, None, 1, m(2).timestamp(), m(2).timestamp()),
        ("opened", ANN, None, 3, m(0).timestamp(), m(4).timestamp()),
    ]

    # A later batch: an open within 5 minutes of Ann's latest adds to that notification, and one
    # within 5 minutes of another chained open of the same batch does too.
    assert await _notify(session, _opened(sent, ANN, m(14)), _opened(sent, ANN, m(18.5))) == 1
    # More than 5 minutes after the latest open: a new notification.
    assert await _notify(session, _opened(sent, ANN, m(24))) == 1
    # A click is told on its own, whatever opens there were.
    assert await _notify(session, _clicked(sent, ANN, "https://example.com/x", m(24.5))) == 1
    assert _brief(await _notifications(admin)) == [
        ("clicked", ANN, "https://example.com/x", 1, m(24.5).timestamp(), m(24.5).timestamp()),
        ("opened", ANN, None, 1, m(24).timestamp(), m(24).timestamp()),
        ("opened", ANN, None, 3, m(10).timestamp(), m(18.5).timestamp()),
        ("opened", BOB, None, 1, m(2).timestamp(), m(2).timestamp()),
        ("opened", ANN, None, 3, m(0).timestamp(), m(4).timestamp()),
    ]


async def test_the_recipient_comes_from_the_campaign_email_when_the_activity_has_none(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await _sent(admin, app, settings, ANN)
    t = _now()
    activity = SettledActivity("opened", sent.id, sent.rows[ANN], None, None, t)
    assert await _notify(session, activity, SettledActivity("opened", sent.id, sent.rows[ANN], None, None, t)) == 1
    assert _brief(await _notifications(admin)) == [("opened", ANN, None, 2, t.timestamp(), t.timestamp())]


async def test_nothing_is_told_when_the_campaign_turned_notifications_off(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await _sent(admin, app, settings, ANN)
    response = await admin.put(f"/emails/{sent.id}/notifications", {"status": False})
    assert response.status_code == 200, response.text
    t = _now()
    assert await _notify(session, _opened(sent, ANN, t), _clicked(sent, ANN, "https://example.com/a", t)) == 0
    assert await _notifications(admin) == []

    response = await admin.put(f"/emails/{sent.id}/notifications", {"status": True})
    assert response.status_code == 200, response.text
    assert await _notify(session, _clicked(sent, ANN, "https://example.com/a", t)) == 1
    assert len(await _notifications(admin)) == 1


async def test_nothing_is_told_for_a_campaign_executed_more_than_30_days_ago(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    old = await _sent(admin, app, settings, ANN)
    recent = await _sent(admin, app, settings, ANN)
    now = datetime.now(UTC)
    for sent, age in ((old, timedelta(days=30, minutes=1)), (recent, timedelta(days=29, hours=23))):
        await session.execute(
            text("UPDATE email_campaigns SET executed_at = :at WHERE id = :id"), {"at": now - age, "id": sent.id}
        )
    await session.commit()
    t = _now()
    told = await _notify(
        session, _opened(old, ANN, t), _clicked(old, ANN, "https://example.com/a", t),
        _opened(recent, ANN, t), _clicked(recent, ANN, "https://example.com/a", t),
    )  # fmt: skip
    assert told == 2
    assert {n["campaign"] for n in await _notifications(admin)} == {str(recent.id)}


async def test_nothing_is_told_when_the_recipient_is_the_sender(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await _sent(admin, app, settings, ANN)
    t = _now()
    own = f" {sent.sender.upper()} "
    told = await _notify(
        session,
        SettledActivity("opened", sent.id, None, own, None, t),
        SettledActivity("clicked", sent.id, None, own, "https://example.com/a", t),
        _opened(sent, ANN, t),
    )
    assert told == 1
    assert _brief(await _notifications(admin)) == [("opened", ANN, None, 1, t.timestamp(), t.timestamp())]


async def test_activity_of_unknown_campaigns_or_recipients_or_other_types_is_not_told(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await _sent(admin, app, settings, ANN)
    t = _now()
    assert await _notify(session) == 0
    told = await _notify(
        session,
        SettledActivity("opened", uuid.uuid4(), None, ANN, None, t),
        SettledActivity("delivered", sent.id, sent.rows[ANN], ANN, None, t),
        # Nobody to name: neither an address nor a recipient row of this campaign.
        SettledActivity("clicked", sent.id, None, None, "https://example.com/a", t),
        SettledActivity("opened", sent.id, uuid.uuid4(), None, None, t),
    )
    assert told == 0
    assert await session.scalar(text("SELECT count(*) FROM notifications")) == 0


async def test_the_list_is_the_callers_own_newest_first_and_paged(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin, role="Agent")
    sent = await _sent(admin, app, settings, ANN)
    t = _now()
    await _notify(
        session, *(_clicked(sent, ANN, f"https://example.com/{n}", t + timedelta(seconds=n)) for n in range(5))
    )

    pages = [await admin.get("/notifications", params={"start": s, "limit": 2}) for s in (0, 2, 4)]
    assert [p.json()["info"] for p in pages] == [{"count": 2, "total": 5}, {"count": 2, "total": 5},
                                                 {"count": 1, "total": 5}]  # fmt: skip
    urls = [n["url"] for p in pages for n in p.json()["data"]]
    assert urls == [f"https://example.com/{n}" for n in (4, 3, 2, 1, 0)]
    assert await _notifications(agent) == []
    assert (await world.client.get("/notifications")).status_code == 401
    response = await admin.get("/notifications", params={"limit": 1001})
    assert response.status_code == 400 and "limit" in response.json()["message"], response.text


async def test_marking_seen_answers_the_notification_and_only_the_owner_may(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin, role="Agent")
    sent = await _sent(admin, app, settings, ANN)
    t = _now()
    await _notify(session, _clicked(sent, ANN, "https://example.com/a", t), _opened(sent, ANN, t))
    clicked, opened = sorted(await _notifications(admin), key=lambda n: n["kind"])

    response = await agent.put(f"/notifications/{clicked['id']}/seen")
    assert response.status_code == 404, response.text
    assert response.json() == {"code": "ResourceNotFound", "message": "id: no such notification"}
    assert (await admin.put(f"/notifications/{uuid.uuid4()}/seen")).status_code == 404
    response = await admin.put("/notifications/not-an-id/seen")
    assert response.status_code == 400 and response.json()["message"].startswith("id:"), response.text
    assert all(n["seen_at"] is None for n in await _notifications(admin))

    before = datetime.now(UTC).timestamp()
    response = await admin.put(f"/notifications/{clicked['id']}/seen")
    assert response.status_code == 200, response.text
    answered = response.json()["data"]
    assert answered == {**clicked, "seen_at": answered["seen_at"]}
    assert before - 1 <= answered["seen_at"] <= datetime.now(UTC).timestamp() + 1
    # Marking it again keeps the first time it was seen.
    again = (await admin.put(f"/notifications/{clicked['id']}/seen")).json()["data"]
    assert again["seen_at"] == answered["seen_at"]
    listed = {n["id"]: n["seen_at"] for n in await _notifications(admin)}
    assert listed == {clicked["id"]: answered["seen_at"], opened["id"]: None}


async def _until_blocked(app: FastAPI, waiter: int, holder: int, task: asyncio.Task[int]) -> None:
    """Until the server reports backend ``waiter`` waiting on a lock ``holder`` holds, or ``task`` ends
    without having waited."""
    deadline = time.monotonic() + 30
    async with app.state.sessionmaker() as watcher:
        while not task.done():
            blocked = await watcher.scalar(
                text("SELECT CAST(:holder AS int) = ANY(pg_blocking_pids(:waiter))"),
                {"holder": holder, "waiter": waiter},
            )
            await watcher.commit()
            if blocked:
                return
            assert time.monotonic() < deadline, "the second settler neither waited nor finished"
            await asyncio.sleep(0.01)


async def test_two_settlers_grouping_the_same_opens_at_once_make_one_notification(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    sent = await _sent(admin, app, settings, ANN)
    t = _now()
    async with app.state.sessionmaker() as first, app.state.sessionmaker() as second:
        assert await notify(first, [_opened(sent, ANN, t)]) == 1
        holder = await first.scalar(text("SELECT pg_backend_pid()"))
        waiter = await second.scalar(text("SELECT pg_backend_pid()"))
        # The second waits for the first's transaction instead of missing its notification.
        waiting = asyncio.create_task(notify(second, [_opened(sent, ANN, t + timedelta(minutes=1))]))
        await _until_blocked(app, waiter, holder, waiting)
        assert not waiting.done()
        await first.commit()
        assert await asyncio.wait_for(waiting, 5) == 1
        await second.commit()
    assert _brief(await _notifications(admin)) == [
        ("opened", ANN, None, 2, t.timestamp(), (t + timedelta(minutes=1)).timestamp())
    ]


async def test_the_settler_tells_the_sender_what_a_recipient_opened_and_clicked(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    html = '<p>New listing: <a href="https://example.com/house">the house</a></p>'
    made = await schedule(admin, path="/emails/individual", html=html, to=[{"recipient_type": "Email", "email": ANN}])
    await sent_over_smtp(app.state.sessionmaker, settings, made["id"])
    email = await session.scalar(text("SELECT email FROM email_campaign_emails WHERE campaign = :c"), {"c": made["id"]})
    # Read an hour after it was sent: not the send's own echo, which counts no one.
    await session.execute(text("UPDATE emails SET sent_at = now() - interval '1 hour' WHERE id = :e"), {"e": email})
    await session.commit()
    tokens = app.state.tracking_tokens
    reader = {"User-Agent": DESKTOP}
    assert (await world.client.get(f"/t/o/{tokens.open(email)}", headers=reader)).status_code == 200
    assert (await world.client.get(f"/t/c/{tokens.click(email, 0)}", headers=reader)).status_code == 302

    await settle_all(app.state.sessionmaker)
    told = sorted((n["kind"], n["recipient"], n["url"], n["count"]) for n in await _notifications(admin))
    assert told == [("clicked", ANN, "https://example.com/house", 1), ("opened", ANN, None, 1)]
