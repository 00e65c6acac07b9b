"""The monthly quota counts every recipient sent through the service's ESP, shared message or not;
mail through the user's own Gmail or Outlook is held to that provider's limits instead.

A real worker sends through local SMTP, Gmail API and Graph servers; what the quota endpoint answers,
what each server received and the campaign's rows are what is checked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from tests.support.campaigns import received, schedule
from tests.support.google_server import gmail_server
from tests.support.graph_server import graph_server
from tests.support.mailboxes import mailbox_settings
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import Actor, World

QUOTA_EXCEEDED = "Maximum marketing email quota per month exceeded."


def emails(*addresses: str) -> list[dict[str, str]]:
    return [{"recipient_type": "Email", "email": a} for a in addresses]


def later_this_month() -> str:
    now = datetime.now(UTC)
    month_end = (now.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return min(now + timedelta(minutes=5), month_end - timedelta(seconds=1)).isoformat()


async def set_quota(app: FastAPI, actor: Actor, quota: int) -> None:
    """There is no endpoint for a user's quota: it is the operator's setting."""
    async with app.state.sessionmaker() as s, s.begin():
        await s.execute(text("UPDATE users SET email_quota = :q WHERE id = :u"), {"q": quota, "u": actor.user})


async def quota_of(actor: Actor) -> dict[str, Any]:
    answer: dict[str, Any] = actor.data(await actor.get(f"/brands/{actor.brand}/emails/quota"))
    return answer


async def test_a_user_whose_quota_is_used_up_cannot_send_a_small_shared_campaign(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    await set_quota(app, admin, 3)
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            first = await schedule(admin, to=emails("a@example.com", "b@example.com", "c@example.com"))
            state = await wait_until_sent(app.state.sessionmaker, first["id"])
            assert state["failed_at"] is None and state["sent"] == 3  # reaching the quota exactly is allowed
            shared = await schedule(
                admin,
                to=emails("d@example.com"),
                cc=emails("e@example.com"),
                bcc=emails("f@example.com", "g@example.com", "h@example.com"),
            )
            refused = await wait_until_sent(app.state.sessionmaker, shared["id"])
    assert refused["failure"] == QUOTA_EXCEEDED and refused["sent"] == 0
    assert received(server) == ["a@example.com", "b@example.com", "c@example.com"]
    rows = admin.data(await admin.get(f"/emails/{shared['id']}/emails"))
    assert len(rows) == 5 and {r["error"] for r in rows} == {QUOTA_EXCEEDED}
    assert await quota_of(admin) == {"executed": 3, "scheduled": 0, "quota": 3}


async def test_shared_campaigns_recipients_are_executed_and_scheduled(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    google = await world.google_credential(admin)
    microsoft = await world.microsoft_credential(admin)
    await world.contacts(
        admin,
        [
            {"emails": ["one@example.com"], "tags": ["buyers"], "partner_email": "partner@example.com"},
            {"emails": ["two@example.com"], "tags": ["buyers"]},
        ],
    )
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            sent = await schedule(
                admin, to=emails("a@example.com", "b@example.com"), cc=emails("c@example.com"), bcc=emails("d@x.com")
            )
            await wait_until_sent(app.state.sessionmaker, sent["id"])
    assert len(server.messages) == 1 and len(received(server)) == 4
    due = later_this_month()
    # Tag buyers: one, partner, two; the Bcc address is a fourth.
    tagged = await schedule(
        admin, to=[{"recipient_type": "Tag", "tag": "buyers"}], bcc=emails("e@example.com"), due_at=due
    )
    await schedule(admin, to=emails("f@example.com"), due_at="2099-01-01T00:00:00Z")  # not this month
    await schedule(admin, to=emails("g@example.com", "h@example.com"), google_credential=google, due_at=due)
    await schedule(admin, to=emails("i@example.com"), microsoft_credential=microsoft, due_at=due)
    # More than one Gmail message takes: it goes through the ESP, and counts.
    many = [f"buyer{i:03}@example.com" for i in range(101)]
    await schedule(admin, to=emails(*many), google_credential=google, due_at=due)
    assert await quota_of(admin) == {"executed": 4, "scheduled": 4 + 101, "quota": 30000}

    # Deleting a sent campaign does not give its recipients back; deleting an unsent one does.
    assert (await admin.delete(f"/emails/{sent['id']}")).status_code == 204
    assert (await admin.delete(f"/emails/{tagged['id']}")).status_code == 204
    assert await quota_of(admin) == {"executed": 4, "scheduled": 101, "quota": 30000}


@pytest.mark.parametrize("kind", ["google", "microsoft"])
async def test_mail_through_the_users_own_mailbox_goes_out_past_the_quota_and_does_not_count(
    world: World, app: FastAPI, settings: Settings, kind: str
) -> None:
    admin = await world.brand_admin()
    await set_quota(app, admin, 1)
    if kind == "google":
        credential = {"google_credential": await world.google_credential(admin, access_token="tok-mailbox")}
        limit = 100
    else:
        credential = {"microsoft_credential": await world.microsoft_credential(admin, access_token="tok-mailbox")}
        limit = 500
    await world.contacts(admin, [{"emails": [f"buyer{i:03}@example.com"], "tags": ["all"]} for i in range(limit + 1)])
    with (
        gmail_server(tokens={"tok-mailbox"}) as gmail,
        graph_server(access_token="tok-mailbox") as graph,
        smtp_server() as smtp,
    ):
        settings_for = mailbox_settings(gmail.url, graph.url)
        async with running_worker(settings, transport="smtp", smtp_url=smtp.url, **settings_for):
            esp = await schedule(admin, to=emails("first@example.com"))
            await wait_until_sent(app.state.sessionmaker, esp["id"])
            own = await schedule(
                admin, to=emails("jane@example.com"), bcc=emails("carl@example.com", "boss@example.com"), **credential
            )
            state = await wait_until_sent(app.state.sessionmaker, own["id"])
            # Too many for one message of the mailbox: the ESP would send it, and the quota is spent.
            fallback = await schedule(admin, to=[{"recipient_type": "Tag", "tag": "all"}], **credential)
            refused = await wait_until_sent(app.state.sessionmaker, fallback["id"])
    assert state["failed_at"] is None and state["sent"] == 3, state["failure"]
    if kind == "google":
        (message,) = gmail.sent
        bcc = sorted(a.addr_spec for a in message.mime["Bcc"].addresses)
        assert (message.mime["To"], bcc) == ("jane@example.com", ["boss@example.com", "carl@example.com"])
        assert graph.sent == []
    else:
        (sent,) = graph.sent
        assert (sent.to, sorted(sent.bcc)) == (["jane@example.com"], ["boss@example.com", "carl@example.com"])
        assert gmail.sent == []
    assert refused["failure"] == QUOTA_EXCEEDED and refused["recipients_count"] == limit + 1 and refused["sent"] == 0
    assert received(smtp) == ["first@example.com"]
    assert await quota_of(admin) == {"executed": 1, "scheduled": 0, "quota": 1}
