"""Who may send as whom: the caller, or a member when the caller is the brand's Admin; a mailbox only
by its owner; mail leaves From an address only once its user has confirmed it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import Actor, World


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "subject": "Open house",
        "html": "<p>Sunday</p>",
        "to": [{"recipient_type": "Email", "email": "jane@example.com"}],
        "due_at": "2031-05-01T15:00:00Z",
        **overrides,
    }


async def campaign_count(session: AsyncSession) -> int:
    count = int(await session.scalar(text("SELECT count(*) FROM email_campaigns")) or 0)
    await session.commit()
    return count


async def test_an_agent_sends_only_as_itself(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin)
    other_agent = await world.member(admin)
    response = await agent.post("/emails", body(**{"from": str(other_agent.user)}))
    assert response.status_code == 403 and response.json()["message"].startswith("from:")
    response = await agent.post("/emails", body(**{"from": str(admin.user)}))
    assert response.status_code == 403
    assert await campaign_count(session) == 0
    own = agent.data(await agent.post("/emails", body()))
    assert own["created_by"] == str(agent.user)
    # An Admin may send as a member of the brand.
    assert (await admin.post("/emails", body(**{"from": str(agent.user)}))).status_code == 200


async def test_an_agent_changes_only_its_own_campaigns(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin)
    other = await world.member(admin)
    theirs = other.data(await other.post("/emails", body()))["id"]
    made_for_agent = admin.data(await admin.post("/emails", body(**{"from": str(agent.user)})))["id"]
    for target in (theirs, made_for_agent):
        replaced = await agent.put(f"/emails/{target}", body(subject="Changed", **{"from": str(agent.user)}))
        assert replaced.status_code == 403, replaced.text
        assert (await agent.delete(f"/emails/{target}")).status_code == 403
    subjects = {r.subject for r in await session.execute(text("SELECT subject FROM email_campaigns"))}
    deleted = await session.scalar(text("SELECT count(*) FROM email_campaigns WHERE deleted_at IS NOT NULL"))
    await session.commit()
    assert subjects == {"Open house"} and deleted == 0
    # The Admin may change and delete either.
    assert (await admin.put(f"/emails/{theirs}", body(subject="Fixed"))).status_code == 200
    assert (await admin.delete(f"/emails/{made_for_agent}")).status_code == 204


async def test_a_mailbox_is_attached_only_by_its_owner(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin)
    gmail = await world.google_credential(agent)
    outlook = await world.microsoft_credential(agent)
    for field, credential in (("google_credential", gmail), ("microsoft_credential", outlook)):
        response = await admin.post("/emails", body(**{"from": str(agent.user), field: credential}))
        assert response.status_code == 403 and response.json()["message"].startswith(field), response.text
    assert await campaign_count(session) == 0
    assert (await agent.post("/emails", body(google_credential=gmail))).status_code == 200


async def test_a_campaign_id_of_another_brand_is_just_a_bad_id(world: World, session: AsyncSession) -> None:
    victim = await world.brand_admin()
    taken = victim.data(await victim.post("/emails", body()))["id"]
    attacker = await world.brand_admin()
    response = await attacker.post("/emails", body(id=taken))
    assert response.status_code == 400 and response.json()["message"].startswith("id:")
    assert await campaign_count(session) == 1


async def test_an_unconfirmed_sender_goes_out_from_the_service_with_reply_to(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    fresh = await world.member(admin, email="new.agent@example.com", confirmed=False)
    made = fresh.data(await fresh.post("/emails", body(due_at=datetime.now(UTC).isoformat())))
    assert made["from_address_verified"] is False
    assert admin.data(await admin.post("/emails", body()))["from_address_verified"] is True
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url, default_from="office@mailroom.test"):
            await wait_until_sent(app.state.sessionmaker, made["id"])
    (sent,) = [m for m in server.messages if m.rcpt_tos == ["jane@example.com"]]
    assert sent.envelope_from == "office@mailroom.test"
    assert "office@mailroom.test" in sent.message["From"] and "new.agent" not in sent.message["From"]
    assert sent.message["Reply-To"] == "new.agent@example.com"


async def test_quota_is_the_users_across_brands_and_counts_shared_campaigns(
    world: World, session: AsyncSession
) -> None:
    first = await world.brand_admin()
    second = await world.brand_admin()
    home = await world.member(first, email="quota.user@example.com")
    token = second.data(await second.post(f"/brands/{second.brand}/invitations", {"email": "quota.user@example.com"}))
    assert (await home.post(f"/invitations/{token['token']}/accept")).status_code == 200
    there = Actor(brand=second.brand, user=home.user, token=home.token, client=home.client)

    individual = home.data(await home.post("/emails/individual", body()))["id"]
    large_shared = there.data(await there.post("/emails", body()))["id"]
    small_shared = there.data(await there.post("/emails", body()))["id"]
    for campaign, rows in ((individual, 5), (large_shared, 1000), (small_shared, 999)):
        await session.execute(
            text("UPDATE email_campaigns SET executed_at = now(), recipients_count = :n WHERE id = :c"),
            {"c": campaign, "n": rows},
        )
        await session.execute(
            text(
                "INSERT INTO email_campaign_emails (campaign, seq, email_address, send_type) "
                "SELECT :c, n, 'r' || n || '@example.com', 'To' FROM generate_series(1, :n) n"
            ),
            {"c": campaign, "n": rows},
        )
    await session.commit()
    for actor in (home, there):
        quota = actor.data(await actor.get(f"/brands/{actor.brand}/emails/quota"))
        assert quota["executed"] == 2004, quota


async def test_quota_refuses_a_campaign_when_other_brands_used_it_up(
    world: World, session: AsyncSession, app: FastAPI, settings: Settings
) -> None:
    first = await world.brand_admin()
    second = await world.brand_admin()
    user = await world.member(first, email="busy.user@example.com")
    token = second.data(await second.post(f"/brands/{second.brand}/invitations", {"email": "busy.user@example.com"}))
    assert (await user.post(f"/invitations/{token['token']}/accept")).status_code == 200
    await session.execute(text("UPDATE users SET email_quota = 3 WHERE id = :u"), {"u": user.user})
    spent = user.data(await user.post("/emails/individual", body()))["id"]
    # Executed as the sender executes: its rows, and their number on the campaign.
    await session.execute(
        text("UPDATE email_campaigns SET executed_at = now(), recipients_count = 3 WHERE id = :c"), {"c": spent}
    )
    await session.execute(
        text(
            "INSERT INTO email_campaign_emails (campaign, seq, email_address, send_type) "
            "SELECT :c, n, 'r' || n || '@example.com', 'To' FROM generate_series(1, 3) n"
        ),
        {"c": spent},
    )
    await session.commit()
    there = Actor(brand=second.brand, user=user.user, token=user.token, client=user.client)
    due = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    made = there.data(await there.post("/emails/individual", body(due_at=due)))["id"]
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(app.state.sessionmaker, made)
    assert state["failure"] == "Maximum marketing email quota per month exceeded."
    assert not [m for m in server.messages if "jane@example.com" in m.rcpt_tos]
