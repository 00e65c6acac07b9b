"""Sending through Mailgun's HTTP API, checked field by field at a local server that answers like it."""

from __future__ import annotations

import json

from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from tests.support.campaigns import due_now, mailgun, schedule
from tests.support.mailgun_server import mailgun_server
from tests.support.sender import running_worker, wait_until_sent
from tests.support.world import World


async def test_individual_campaign_is_one_batch_call_with_recipient_variables(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin(first="Sam", last="Seller")
    await world.contacts(
        admin,
        [{"emails": ["ann@example.com"], "first_name": "Ann", "tags": ["t"]},
         {"emails": ["bob@example.com"], "first_name": "Bob", "tags": ["t"]},
         {"emails": ["cy@example.com"], "tags": ["t"]}],
    )  # fmt: skip
    made = await schedule(
        admin,
        path="/emails/individual",
        to=[{"recipient_type": "Tag", "tag": "t"}],
        subject="Hi {{recipient.first_name or 'there'}}",
        html="<p>News from {{sender.display_name}}</p>",
        tags=["spring", "open-house"],
    )
    with mailgun_server() as fake:
        async with running_worker(settings, **mailgun(settings, fake)):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["sent"] == 3 and state["failed"] == 0
    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request.endpoint == "messages" and request.domain == "mg.example.com"
    assert request.content_type.startswith("multipart/form-data")
    assert request.field("from") == "Sam Seller <" + admin_email(request) + ">"
    assert sorted(request.fields["to"]) == ["ann@example.com", "bob@example.com", "cy@example.com"]
    assert request.field("subject") == "%recipient.subject%"
    # The same for all but each one's unsubscribe link (in the footer): sent once, the link a variable.
    html = request.field("html")
    assert html.startswith("<p>News from Sam Seller</p>") and 'href="%recipient.unsubscribe%"' in html
    assert request.field("text").endswith("unsubscribe: %recipient.unsubscribe%\n")
    assert request.fields["o:tag"] == [str(admin.brand), made["id"], "spring"]
    assert request.field("h:Feedback-ID") == f"rechat:{admin.brand}:rechat"
    assert request.field("h:List-Unsubscribe") == "<%recipient.unsubscribe%>"
    assert request.field("h:List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    variables = json.loads(request.field("recipient-variables"))
    assert {a: v["subject"] for a, v in variables.items()} == {
        "ann@example.com": "Hi Ann", "bob@example.com": "Hi Bob", "cy@example.com": "Hi there"}  # fmt: skip
    assert all(v["unsubscribe"].startswith("http://mailroom.test/unsubscribe/") for v in variables.values())
    async with app.state.sessionmaker() as s:
        ids = (await s.execute(text("SELECT DISTINCT esp_message_id FROM emails WHERE campaign = :c"),
                               {"c": made["id"]})).scalars().all()  # fmt: skip
    # Every recipient of one batch call carries that call's id, as Mailgun's events will.
    assert len(ids) == 1 and ids[0].endswith("@mg.example.com") and not ids[0].startswith("<")


def admin_email(request: object) -> str:
    sender = request.field("from")  # type: ignore[attr-defined]
    return str(sender.split("<", 1)[1].rstrip(">"))


async def test_shared_message_goes_as_mime_to_everyone(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    made = await schedule(
        admin,
        to=[{"recipient_type": "Email", "email": "to@example.com"}],
        cc=[{"recipient_type": "Email", "email": "cc@example.com"}],
        bcc=[{"recipient_type": "Email", "email": "bcc@example.com"}],
        due_at=due_now(),
    )
    with mailgun_server() as fake:
        async with running_worker(settings, **mailgun(settings, fake)):
            await wait_until_sent(app.state.sessionmaker, made["id"])
    (request,) = fake.requests
    assert request.endpoint == "messages.mime"
    assert sorted(request.fields["to"]) == ["bcc@example.com", "cc@example.com", "to@example.com"]
    mime = request.mime
    assert mime is not None and mime["To"] == "to@example.com" and mime["Cc"] == "cc@example.com"
    assert mime["Bcc"] is None
    got = admin.data(await admin.get(f"/emails/{made['id']}?associations[]=email_campaign.emails"
                                     "&associations[]=email_campaign_email.email"))  # fmt: skip
    emails = {row["email"]["id"] for row in got["emails"]}
    assert len(emails) == 1  # one message for the three rows
    email = got["emails"][0]["email"]
    assert (
        email["to"] == ["to@example.com"] and email["cc"] == ["cc@example.com"] and email["bcc"] == ["bcc@example.com"]
    )
    assert got["sent"] == 3
