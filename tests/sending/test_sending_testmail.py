"""POST /emails/{id}/test: the campaign once to the caller's own address, through a real worker, counting nowhere."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from mailroom.sending.footer import FOOTER_TEXT
from mailroom.sending.testmail import BURST
from tests.support.campaigns import campaign, due_now
from tests.support.google_server import gmail_server
from tests.support.mailboxes import mailbox_settings
from tests.support.sender import running_worker, sent_over_smtp, wait_until_no_jobs
from tests.support.smtp_server import FakeSmtpServer, smtp_server
from tests.support.uploads import PDF, upload
from tests.support.world import Actor, World

HTML = '<p>Hi {{ recipient.first_name }}, from {{ sender.first_name }}. <a href="https://example.com/house">See</a></p>'
# What a test must leave as it found it: the send records, the events and the jobs that would count them.
TRACES = text(
    """
    SELECT (SELECT count(*) FROM email_campaign_emails) AS recipient_rows, (SELECT count(*) FROM emails) AS emails,
           (SELECT count(*) FROM email_events) AS events, (SELECT count(*) FROM unsettled_events) AS unsettled
    """
)
JOBS = text("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'mailroom.send_test'")


@pytest.fixture
async def admin(world: World) -> Actor:
    return await world.brand_admin(first="Sam", last="Seller")


async def traces(app: FastAPI) -> dict[str, Any]:
    async with app.state.sessionmaker() as s:
        return dict((await s.execute(TRACES)).one()._mapping)


async def queued_jobs(app: FastAPI) -> int:
    async with app.state.sessionmaker() as s:
        count: int = (await s.execute(JOBS)).scalar_one()
        return count


async def run_worker_until_done(app: FastAPI, settings: Settings, server: FakeSmtpServer, **overrides: Any) -> None:
    """Run a worker sending through ``server`` until every queued job is done."""
    async with running_worker(settings, transport="smtp", smtp_url=server.url, **overrides):
        await wait_until_no_jobs(app.state.sessionmaker)


async def state(actor: Actor, campaign_id: str) -> tuple[Any, Any]:
    """What the caller sees of the campaign and of their quota."""
    seen = actor.data(await actor.get(f"/emails/{campaign_id}"))
    return seen, actor.data(await actor.get(f"/brands/{actor.brand}/emails/quota"))


async def test_a_draft_s_test_reaches_only_the_caller_rendered_for_them_and_the_draft_stays_a_draft(
    admin: Actor, app: FastAPI, settings: Settings
) -> None:
    draft = admin.data(await admin.post("/emails", campaign(html=HTML, due_at=None)))
    before, before_traces = await state(admin, draft["id"]), await traces(app)
    answer = await admin.post(f"/emails/{draft['id']}/test")
    assert answer.status_code == 202, answer.text
    address = answer.json()["data"]["to"]
    assert answer.json() == {"code": "OK", "data": {"to": address, "queued": True}}
    assert address.startswith("admin")

    with smtp_server() as server:
        await run_worker_until_done(app, settings, server)
    (mail,) = server.messages
    assert mail.rcpt_tos == [address]  # jane@example.com, the campaign's recipient, got nothing
    assert mail.message["Subject"] == "[Test] Open house"
    assert mail.message["From"] == f"Sam Seller <{address}>"  # the sender's identity, as a real send
    assert mail.message["List-Unsubscribe"] is not None  # and its headers
    html = mail.message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    # Rendered for the caller as the recipient; its link is the campaign's own, not a tracked one.
    assert 'Hi Sam, from Sam. <a href="https://example.com/house">' in html
    assert "/t/" not in html
    # The unsubscribe footer a recipient would see; the link is the one List-Unsubscribe names.
    assert FOOTER_TEXT in html and FOOTER_TEXT in mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert mail.message["List-Unsubscribe"].strip("<>") in html
    assert await state(admin, draft["id"]) == before
    assert before[0]["due_at"] is None
    assert await traces(app) == before_traces == {"recipient_rows": 0, "emails": 0, "events": 0, "unsettled": 0}


async def test_a_sent_campaign_can_be_tested_and_its_rows_and_counters_do_not_move(
    admin: Actor, app: FastAPI, settings: Settings
) -> None:
    made = admin.data(await admin.post("/emails", campaign(html=HTML, due_at=due_now())))
    await sent_over_smtp(app.state.sessionmaker, settings, made["id"])
    before, before_traces = await state(admin, made["id"]), await traces(app)
    assert before[0]["sent"] == 1 and before_traces["emails"] == 1

    address = admin.data(await admin.post(f"/emails/{made['id']}/test"))["to"]
    with smtp_server() as server:
        await run_worker_until_done(app, settings, server)
    assert [m.rcpt_tos for m in server.messages] == [[address]]
    assert server.messages[0].message["Subject"] == "[Test] Open house"
    assert await state(admin, made["id"]) == before
    assert await traces(app) == before_traces


async def test_a_campaign_with_a_gmail_mailbox_is_tested_through_it_with_its_attachments(
    world: World, admin: Actor, app: FastAPI, settings: Settings
) -> None:
    credential = await world.google_credential(admin, access_token="tok-gmail")
    flyer = await upload(admin, PDF, "flyer.pdf", content_type="application/pdf")
    body = campaign(
        due_at=None,
        google_credential=credential,
        headers={"thread_id": "thread-77"},
        attachments=[{"file": flyer["id"]}],
    )
    draft = admin.data(await admin.post("/emails", body))
    before, before_traces = await state(admin, draft["id"]), await traces(app)
    address = admin.data(await admin.post(f"/emails/{draft['id']}/test"))["to"]
    with gmail_server(tokens={"tok-gmail"}) as gmail, smtp_server() as smtp:
        await run_worker_until_done(app, settings, smtp, **mailbox_settings(gmail.url))
    assert smtp.messages == []  # not through the ESP
    (sent,) = gmail.sent
    assert sent.mime["To"] == address and sent.mime["Subject"] == "[Test] Open house"
    assert sent.mime["From"].addresses[0].addr_spec.startswith("mailbox")  # the mailbox's own address
    assert sent.thread_id == "thread-77"
    parts = {part.get_filename(): part for part in sent.mime.walk() if part.get_filename()}
    assert parts["flyer.pdf"].get_content() == PDF
    assert await state(admin, draft["id"]) == before
    assert await traces(app) == before_traces


async def test_a_refused_test_is_logged_and_changes_nothing(
    admin: Actor, app: FastAPI, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailroom")
    draft = admin.data(await admin.post("/emails", campaign(due_at=None)))
    before, before_traces = await state(admin, draft["id"]), await traces(app)
    address = admin.data(await admin.post(f"/emails/{draft['id']}/test"))["to"]
    with smtp_server() as server:
        server.refuse(address)
        await run_worker_until_done(app, settings, server)
    assert server.messages == []
    (line,) = [r for r in caplog.records if r.getMessage().startswith(f"test of campaign {draft['id']}")]
    assert line.levelno == logging.WARNING and "refused" in line.getMessage() and "550" in line.getMessage()
    assert await state(admin, draft["id"]) == before
    assert await traces(app) == before_traces


async def test_an_unconfirmed_caller_is_refused_naming_their_address(world: World, admin: Actor, app: FastAPI) -> None:
    draft = admin.data(await admin.post("/emails", campaign(due_at=None)))
    agent = await world.member(admin, confirmed=False)
    refused = await agent.post(f"/emails/{draft['id']}/test")
    assert refused.status_code == 409, refused.text
    assert refused.json()["message"].startswith("email: is not confirmed yet")
    assert await queued_jobs(app) == 0


async def test_another_brand_s_campaign_and_a_deleted_one_are_not_found(
    world: World, admin: Actor, app: FastAPI
) -> None:
    other = await world.brand_admin()
    theirs = other.data(await other.post("/emails", campaign(due_at=None)))
    mine = admin.data(await admin.post("/emails", campaign(due_at=None)))
    assert (await admin.delete(f"/emails/{mine['id']}")).status_code == 204
    for campaign_id in (theirs["id"], mine["id"], str(uuid.uuid4())):
        refused = await admin.post(f"/emails/{campaign_id}/test")
        assert refused.status_code == 404 and refused.json()["message"] == "id: no such campaign", refused.text
    assert await queued_jobs(app) == 0


async def test_a_caller_may_send_a_few_tests_in_a_row_then_one_every_few_minutes(
    world: World, admin: Actor, app: FastAPI
) -> None:
    draft = admin.data(await admin.post("/emails", campaign(due_at=None)))
    for _ in range(BURST):
        assert (await admin.post(f"/emails/{draft['id']}/test")).status_code == 202
    refused = await admin.post(f"/emails/{draft['id']}/test")
    assert refused.status_code == 429, refused.text
    assert refused.json() == {
        "code": "TooManyRequests",
        "message": f"id: {BURST} tests of this campaign were sent in a row; the next one can be sent in 6 minutes "
        "(then one every 6 minutes)",
    }
    assert await queued_jobs(app) == BURST
    # Another member's tests are their own.
    agent = await world.member(admin)
    assert (await agent.post(f"/emails/{draft['id']}/test")).status_code == 202
    # Six minutes later, one more.
    async with app.state.sessionmaker() as s, s.begin():
        await s.execute(text("UPDATE send_rate SET next_at = next_at - interval '6 minutes'"))
    assert (await admin.post(f"/emails/{draft['id']}/test")).status_code == 202
    assert (await admin.post(f"/emails/{draft['id']}/test")).status_code == 429
    assert await queued_jobs(app) == BURST + 2
