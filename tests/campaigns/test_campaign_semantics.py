"""What the campaign endpoints mean: tenancy, listing, ordering, replacing, deleting and the quota."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.campaigns import campaign, row_counts
from tests.support.world import Actor, World


async def create(actor: Actor, **overrides: Any) -> dict[str, Any]:
    return actor.data(await actor.post("/emails", campaign(**overrides)))


async def mark_executed(session: AsyncSession, campaign_id: str, when: datetime | None = None) -> None:
    await session.execute(
        text("UPDATE email_campaigns SET executed_at = :at WHERE id = :id"),
        {"id": campaign_id, "at": when or datetime.now(UTC)},
    )
    await session.commit()


async def test_another_brand_sees_nothing(world: World) -> None:
    owner, stranger = await world.brand_admin(), await world.brand_admin()
    made = await create(owner)
    cid = made["id"]
    for response in (
        await stranger.get(f"/emails/{cid}"),
        await stranger.get(f"/emails/{cid}/emails"),
        await stranger.put(f"/emails/{cid}", campaign(subject="mine now")),
        await stranger.put(f"/emails/{cid}/notifications", {"status": False}),
        await stranger.delete(f"/emails/{cid}"),
    ):
        assert response.status_code == 404, response.text
        assert "Open house" not in response.text
    for response in (
        await stranger.get(f"/brands/{owner.brand}/emails/campaigns"),
        await stranger.get(f"/brands/{owner.brand}/emails/quota"),
        await stranger.post("/emails", campaign(), headers={"X-Rechat-Brand": str(owner.brand)}),
    ):
        assert response.status_code == 403, response.text
    assert owner.data(await owner.get(f"/emails/{cid}")) == made


async def test_a_stranger_creating_in_a_brand_is_refused_for_that_first_and_writes_nothing(
    world: World, session: AsyncSession
) -> None:
    owner, stranger = await world.brand_admin(), await world.brand_admin()
    before = await row_counts(session)
    in_owners = {"X-Rechat-Brand": str(owner.brand)}
    for body in (
        campaign(),
        campaign(html=None),  # neither html nor text: refused, to a member
        campaign(html="{{ recipient.first_name"),  # a template that does not compile
        campaign(**{"from": str(owner.user)}),  # as another user
        campaign(id=str(uuid.uuid4()), cc=[{"recipient_type": "Email", "email": "x@example.com"}]),
    ):
        for path in ("/emails", "/emails/individual"):
            refused = await stranger.post(path, body, headers=in_owners)
            assert refused.status_code == 403, refused.text
            assert refused.json() == {"code": "Forbidden", "message": "brand: you are not a member of this brand"}
    assert await row_counts(session) == before
    # The same bodies from a member: written, or refused for what is wrong with them.
    assert (await owner.post("/emails", campaign())).status_code == 200
    assert (await owner.post("/emails", campaign(html=None))).status_code == 400
    assert (await owner.post("/emails", campaign(html="{{ recipient.first_name"))).status_code == 400


async def test_parent_brand_members_reach_child_brands(world: World) -> None:
    broker = await world.brand_admin()
    team = broker.data(await broker.post("/brands", {"name": "Team", "parent": str(broker.brand)}))["id"]
    agent = await world.member(broker, role="Agent")
    made = agent.data(await agent.post("/emails", campaign(), headers={"X-Rechat-Brand": team}))
    assert made["brand"] == team
    listed = broker.data(await broker.get(f"/brands/{team}/emails/campaigns"))
    assert [c["id"] for c in listed] == [made["id"]]
    # A child brand's members do not see the parent's campaigns.
    parents = await create(broker)
    team_lead = await world.member(dataclasses.replace(broker, brand=uuid.UUID(team)), role="Admin")
    assert (await team_lead.get(f"/brands/{broker.brand}/emails/campaigns")).status_code == 403
    assert (await team_lead.get(f"/emails/{parents['id']}")).status_code == 404
    assert [c["id"] for c in team_lead.data(await team_lead.get(f"/brands/{team}/emails/campaigns"))] == [made["id"]]


async def test_status_filters_order_and_pages(admin_session: tuple[Actor, AsyncSession]) -> None:
    admin, session = admin_session
    draft = await create(admin, due_at=None, subject="draft")
    later = await create(admin, due_at="2032-01-01T00:00:00Z", subject="later")
    sooner = await create(admin, due_at="2031-01-01T00:00:00Z", subject="sooner")
    done = await create(admin, due_at="2030-01-01T00:00:00Z", subject="done")
    gone = await create(admin, due_at="2030-06-01T00:00:00Z", subject="gone")
    await mark_executed(session, done["id"])
    assert (await admin.delete(f"/emails/{gone['id']}")).status_code == 204

    async def subjects(query: str) -> tuple[list[str], dict[str, int]]:
        response = await admin.get(f"/brands/{admin.brand}/emails/campaigns?{query}")
        assert response.status_code == 200, response.text
        return [c["subject"] for c in response.json()["data"]], response.json()["info"]

    assert await subjects("") == (["done", "sooner", "later"], {"count": 3, "total": 3})
    assert (await subjects("status=draft"))[0] == ["draft"]
    assert (await subjects("status=executed"))[0] == ["done"]
    assert (await subjects("status=scheduled&order=due_at"))[0] == ["sooner", "later"]
    assert (await subjects("status=any&order=-due_at"))[0] == ["later", "sooner", "done", "draft"]
    assert (await subjects("status=any&order=%2Bdue_at"))[0] == ["done", "sooner", "later", "draft"]
    assert await subjects("status=any&order=due_at&start=1&limit=2") == (
        ["sooner", "later"],
        {"count": 2, "total": 4},
    )
    assert (await subjects("status=any&order=-executed_at,-created_at"))[0] == ["done", "sooner", "later", "draft"]
    assert draft["due_at"] is None and later["due_at"] == datetime(2032, 1, 1, tzinfo=UTC).timestamp()
    assert sooner["executed_at"] is None


async def test_put_replaces_the_whole_campaign(world: World) -> None:
    admin = await world.brand_admin()
    colleague = await world.member(admin)
    made = await create(
        admin,
        **{"from": str(colleague.user)},
        cc=[{"recipient_type": "Email", "email": "cc@example.com"}],
        include_signature=True,
        notifications_enabled=False,
        attachments=[{"url": "https://cdn.example/flyer.pdf", "name": "flyer.pdf"}],
    )
    replaced = admin.data(
        await admin.put(
            f"/emails/{made['id']}?associations[]=email_campaign.recipients&associations[]=email_campaign.attachments",
            {"to": [{"recipient_type": "Tag", "tag": "Buyers"}], "subject": "New", "html": "<p>x</p>", "due_at": None},
        )
    )
    assert [(r["recipient_type"], r["tag"], r["send_type"]) for r in replaced["recipients"]] == [
        ("Tag", "Buyers", "To")
    ]
    assert replaced["attachments"] is None
    assert replaced["include_signature"] is False and replaced["notifications_enabled"] is True
    assert replaced["due_at"] is None and replaced["subject"] == "New" and replaced["text"] == "x"
    assert replaced["updated_at"] is not None
    got = admin.data(await admin.get(f"/emails/{made['id']}?associations[]=email_campaign.from"))
    assert got["from"]["id"] == str(colleague.user)  # a missing from keeps the old sender
    listed = admin.data(await admin.get(f"/brands/{admin.brand}/emails/campaigns?status=draft"))
    assert [c["id"] for c in listed] == [made["id"]]


async def test_delete_hides_the_campaign_everywhere(world: World) -> None:
    admin = await world.brand_admin()
    made = await create(admin)
    assert (await admin.delete(f"/emails/{made['id']}")).status_code == 204
    assert (await admin.get(f"/emails/{made['id']}")).status_code == 404
    assert (await admin.delete(f"/emails/{made['id']}")).status_code == 404
    assert admin.data(await admin.get(f"/brands/{admin.brand}/emails/campaigns?status=any")) == []


async def test_defaults_and_derived_fields(world: World) -> None:
    admin = await world.brand_admin()
    made = await create(admin, html='<p>Hi <a href="https://x.example/home">the house</a></p>')
    assert made["individual"] is False and made["include_signature"] is False and made["archive"] is False
    assert made["notifications_enabled"] is True and made["listed"] is True and made["sent"] == 0
    assert made["text"] == "Hi the house (https://x.example/home)"
    for blank in ({"html": "", "text": None}, {"html": None, "text": " \n"}):
        refused = await admin.post("/emails", campaign(**blank))
        # Neither a body nor a text: it would go out blank, so it is refused and nothing is stored.
        assert refused.status_code == 400 and refused.json()["message"] == (
            "html: a campaign needs html or text (it has neither)"
        )
    assert len(admin.data(await admin.get(f"/brands/{admin.brand}/emails/campaigns?status=any"))) == 1
    personal = await create(admin, subject="Hi {{ recipient.first_name or 'there' }}")
    assert personal["individual"] is True
    individual = admin.data(await admin.post("/emails/individual", campaign(headers={"thread_id": "t"})))
    assert individual["individual"] is True and individual["headers"] == {}


def later_this_month() -> datetime:
    now = datetime.now(UTC)
    month_end = (now.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return min(now + timedelta(minutes=5), month_end - timedelta(seconds=1))


async def test_quota_counts_mail_of_the_caller_this_month(
    world: World, admin_session: tuple[Actor, AsyncSession]
) -> None:
    admin, session = admin_session
    colleague = await world.member(admin)
    contacts = await world.contacts(
        admin,
        [
            {"emails": ["one@example.com"], "tags": ["Buyers"], "partner_email": "partner@example.com"},
            {"emails": ["TWO@example.com"], "tags": ["buyers"]},
            {"emails": ["parked@example.com"], "tags": ["Buyers"], "parked": True},
            {"emails": ["gone@example.com"], "tags": ["Buyers", "Unsubscribed"]},
        ],
    )
    assert len(contacts) == 4
    due = later_this_month().isoformat()
    # Tag: one, partner, two; the To address repeated in BCC and in another case counts once.
    await admin.post(
        "/emails/individual",
        campaign(
            to=[{"recipient_type": "Tag", "tag": "BUYERS"}, {"recipient_type": "Email", "email": "two@example.com"}],
            due_at=due,
        ),
    )
    await create(admin, due_at=due)  # shared, through the ESP: counts too
    await colleague.post("/emails/individual", campaign(due_at=due))  # someone else's
    await create(admin, due_at="2099-01-01T00:00:00Z", individual=True)  # not this month
    assert admin.data(await admin.get(f"/brands/{admin.brand}/emails/quota")) == {
        "executed": 0,
        "scheduled": 4,
        "quota": 30000,
    }

    sent = await create(admin, individual=True, due_at=due)
    await mark_executed(session, sent["id"])
    await session.execute(
        text(
            "INSERT INTO email_campaign_emails (campaign, seq, email_address, send_type) "
            "SELECT :c, n, 'r' || n || '@example.com', 'To' FROM generate_series(1, 7) n"
        ),
        {"c": sent["id"]},
    )
    # As the sender executes: the rows' number is kept on the campaign.
    await session.execute(text("UPDATE email_campaigns SET recipients_count = 7 WHERE id = :c"), {"c": sent["id"]})
    old = await create(admin, individual=True, due_at="2020-01-01T00:00:00Z")
    await mark_executed(session, old["id"], datetime(2020, 1, 1, tzinfo=UTC))
    await session.execute(
        text(
            "INSERT INTO email_campaign_emails (campaign, seq, email_address, send_type) "
            "VALUES (:c, 1, 'x@example.com', 'To')"
        ),
        {"c": old["id"]},
    )
    await session.execute(text("UPDATE email_campaigns SET recipients_count = 1 WHERE id = :c"), {"c": old["id"]})
    await session.commit()
    quota = admin.data(await admin.get(f"/brands/{admin.brand}/emails/quota"))
    assert quota == {"executed": 7, "scheduled": 4, "quota": 30000}
    assert colleague.data(await colleague.get(f"/brands/{admin.brand}/emails/quota"))["scheduled"] == 1


async def test_campaign_emails_order_and_total(admin_session: tuple[Actor, AsyncSession], world: World) -> None:
    admin, session = admin_session
    people = await world.contacts(
        admin,
        [
            {"emails": ["a@example.com"], "first_name": "Zoe", "last_name": "Adams"},
            {"emails": ["b@example.com"], "first_name": "Amy", "last_name": "Brown"},
        ],
    )
    made = await create(admin)
    await mark_executed(session, made["id"])
    await session.execute(
        text(
            "INSERT INTO email_campaign_emails (campaign, seq, email_address, send_type, contact, failed, clicked) "
            "VALUES (:c, 1, 'a@example.com', 'To', :zoe, 0, 2), (:c, 2, 'b@example.com', 'CC', :amy, 1, 0), "
            "(:c, 3, 'c@example.com', 'BCC', NULL, 0, 1)"
        ),
        {"c": made["id"], "zoe": people[0]["id"], "amy": people[1]["id"]},
    )
    await session.commit()

    async def addresses(query: str) -> list[str]:
        response = await admin.get(f"/emails/{made['id']}/emails?{query}")
        assert response.status_code == 200, response.text
        return [row["email_address"] for row in response.json()["data"]]

    assert await addresses("order=full_name") == ["b@example.com", "a@example.com", "c@example.com"]
    assert await addresses("order=-failed") == ["b@example.com", "a@example.com", "c@example.com"]
    assert await addresses("order=-clicked") == ["a@example.com", "c@example.com", "b@example.com"]
    page = (await admin.get(f"/emails/{made['id']}/emails?start=1&limit=1")).json()
    assert page["info"] == {"count": 1, "total": 3}
    assert page["data"][0]["full_name"] == "Amy Brown" and page["data"][0]["send_type"] == "CC"
