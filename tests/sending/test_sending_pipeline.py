"""Due campaigns become mail at a real SMTP server: exactly the right addresses, once each."""

from __future__ import annotations

from email.message import EmailMessage

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from tests.support.campaigns import due_now, received, schedule
from tests.support.sender import running_worker, wait_until_no_jobs, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World


async def test_every_recipient_type_reaches_exactly_the_expected_addresses(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    team = admin.data(await admin.post("/brands", {"name": "Team", "parent": str(admin.brand)}))["id"]
    await admin.post(f"/brands/{team}/users", {"email": "team.agent@example.com", "role": "Agent"})
    await admin.post(f"/brands/{admin.brand}/users", {"email": "office.agent@example.com", "role": "Agent"})
    await world.confirm("team.agent@example.com", "office.agent@example.com")  # no confirmation mail in the count
    people = await world.contacts(
        admin,
        [
            {"emails": ["Buyer.One@example.com", "second@example.com"], "tags": ["buyers"],
             "partner_email": "partner.one@example.com"},
            {"emails": ["buyer.two@example.com"], "tags": ["Buyers"]},
            {"emails": ["parked@example.com"], "tags": ["buyers"], "parked": True},
            {"emails": ["quit@example.com"], "tags": ["buyers", "Unsubscribed"]},
            {"emails": ["listed@example.com"]},
            {"emails": ["deleted@example.com"], "tags": ["buyers"]},
        ],
    )  # fmt: skip
    await world.delete_contact(people[5])
    crm_list = await world.crm_list(admin, "VIP", [people[4]["id"], people[2]["id"]])
    agent = await world.agent(admin, email="mls.agent@example.com")
    async with app.state.sessionmaker() as s, s.begin():
        await s.execute(
            text("INSERT INTO suppressions (brand, email, reason) VALUES (:b, 'bounced@example.com', 'bounced')"),
            {"b": admin.brand},
        )
    made = await schedule(
        admin,
        to=[
            {"recipient_type": "Tag", "tag": "BUYERS"},
            {"recipient_type": "Email", "email": "bounced@example.com"},
            {"recipient_type": "Agent", "agent": agent["id"]},
        ],
        cc=[
            {"recipient_type": "List", "list": crm_list["id"]},
            {"recipient_type": "Email", "email": "BUYER.TWO@example.com "},
        ],
        bcc=[{"recipient_type": "Brand", "brand": team}, {"recipient_type": "Contact", "contact": people[1]["id"]}],
    )
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    expected = ["buyer.one@example.com", "buyer.two@example.com", "listed@example.com", "mls.agent@example.com",
                "partner.one@example.com", "team.agent@example.com"]  # fmt: skip
    assert received(server) == expected
    assert state["recipients_count"] == 6 and state["sent"] == 6 and state["failed"] == 0
    # Not individual and under 1,000 recipients: one message, To/Cc visible, Bcc only in the envelope.
    assert len(server.messages) == 1
    message = server.messages[0].message
    assert sorted(message["To"].split(", ")) == ["buyer.one@example.com", "buyer.two@example.com",
                                                 "mls.agent@example.com", "partner.one@example.com"]  # fmt: skip
    assert message["Cc"] == "listed@example.com"
    assert message["Bcc"] is None and "team.agent" not in server.messages[0].raw.decode()
    got = admin.data(await admin.get(f"/emails/{made['id']}/emails?order=full_name"))
    by_address = {row["email_address"]: row["send_type"] for row in got}
    assert by_address["buyer.two@example.com"] == "To" and by_address["team.agent@example.com"] == "BCC"


async def test_individual_campaign_is_personalised_per_recipient(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient
) -> None:
    admin = await world.brand_admin(first="Sam", last="Seller")
    await world.contacts(
        admin,
        [{"emails": ["ann@example.com"], "first_name": "Ann", "tags": ["t"]},
         {"emails": ["bob@example.com"], "tags": ["t"]}],
    )  # fmt: skip
    made = await schedule(
        admin,
        path="/emails/individual",
        to=[{"recipient_type": "Tag", "tag": "t"}],
        subject="Hi {{recipient.first_name or 'there'}}",
        html="<p>From {{sender.display_name}} to {{ recipient.email }}</p>",
    )
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            await wait_until_sent(app.state.sessionmaker, made["id"])
    by_rcpt = {m.rcpt_tos[0]: m.message for m in server.messages}
    assert set(by_rcpt) == {"ann@example.com", "bob@example.com"}
    assert by_rcpt["ann@example.com"]["Subject"] == "Hi Ann" and by_rcpt["bob@example.com"]["Subject"] == "Hi there"
    html = _part(by_rcpt["ann@example.com"], "text/html")
    assert "From Sam Seller to ann@example.com" in html
    msg = by_rcpt["bob@example.com"]
    assert msg["Feedback-ID"] == f"rechat:{admin.brand}:rechat"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = msg["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith("http://mailroom.test/unsubscribe/")
    # One click, no login: the address is suppressed and its contact tagged at once.
    assert (await client.post(unsubscribe.removeprefix("http://mailroom.test"))).status_code == 200
    forged = unsubscribe[:-3] + "abc"
    assert (await client.post(forged.removeprefix("http://mailroom.test"))).status_code == 404
    contacts = admin.data(await admin.get(f"/brands/{admin.brand}/contacts?tag=unsubscribed"))
    assert [c["email"] for c in contacts] == ["bob@example.com"]
    rows = admin.data(await admin.get(f"/emails/{made['id']}?associations[]=email_campaign.emails"
                                      "&associations[]=email_campaign_email.email"))["emails"]  # fmt: skip
    assert all(r["email"]["mailgun_id"] and r["email"]["sent_at"] for r in rows)
    assert {r["email"]["tags"][0] for r in rows} == {str(admin.brand)}
    # The bodies come only when asked for; the recipients page shows the same rows.
    assert all("html" not in r["email"] and "text" not in r["email"] for r in rows)
    page = admin.data(await admin.get(f"/emails/{made['id']}/emails?associations[]=email_campaign_email.email"
                                      "&associations[]=email.html"))  # fmt: skip
    assert [r["email_address"] for r in page] == [r["email_address"] for r in rows]
    assert all("html" in r["email"] and "text" not in r["email"] for r in page)


def _part(message: EmailMessage, content_type: str) -> str:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return str(part.get_content())
    raise AssertionError(f"no {content_type} part")


async def test_a_scheduled_campaign_waits_for_its_time_and_goes_once(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    soon = await schedule(admin, to=[{"recipient_type": "Email", "email": "soon@example.com"}], due_at=due_now(1.5))
    await schedule(admin, to=[{"recipient_type": "Email", "email": "draft@example.com"}], due_at=None)
    deleted = await schedule(admin, to=[{"recipient_type": "Email", "email": "del@example.com"}], due_at=due_now(1))
    moved = await schedule(admin, to=[{"recipient_type": "Email", "email": "moved@example.com"}], due_at=due_now(1))
    await admin.delete(f"/emails/{deleted['id']}")
    later_body = {"to": [{"recipient_type": "Email", "email": "moved@example.com"}], "subject": "x", "text": "x",
                  "due_at": due_now(3600)}  # fmt: skip
    assert (await admin.put(f"/emails/{moved['id']}", later_body)).status_code == 200
    executed = text("SELECT executed_at FROM email_campaigns WHERE id = :id")
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(app.state.sessionmaker, soon["id"])
        async with app.state.sessionmaker() as s:
            executed_at = (await s.execute(executed, {"id": soon["id"]})).scalar_one()
        assert executed_at.timestamp() >= soon["due_at"], "executed before its due time"
        # A second worker must not execute it again. It looks at every due campaign when it starts and
        # again when one is scheduled; once a later campaign went out through it and no job is left,
        # it has had its chance at the first one, whatever time that took.
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            later = await schedule(admin, to=[{"recipient_type": "Email", "email": "later@example.com"}])
            await wait_until_sent(app.state.sessionmaker, later["id"])
            await wait_until_no_jobs(app.state.sessionmaker)
        async with app.state.sessionmaker() as s:
            assert (await s.execute(executed, {"id": soon["id"]})).scalar_one() == executed_at
    assert received(server) == ["later@example.com", "soon@example.com"]
    assert state["sent"] == 1
