"""Every campaign example of the API document, replayed against the service.

Ids in the examples are mapped to objects this test creates; campaign ids are sent by the client
(as in the document) and must come back unchanged. Each response must have exactly the example's
field names, with the same JSON types wherever the example shows a value.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.dns_server import dns_server
from tests.support.domains import app_settings
from tests.support.mailgun_domains_server import mailgun_domains_server
from tests.support.uploads import PNG as UPLOAD_PNG
from tests.support.uploads import post_upload
from tests.support.world import Actor, World

EXAMPLES = json.loads((Path(__file__).parents[1] / "fixtures/api_examples.json").read_text())
# Fields this service adds to the document's objects, by object type (DNS records have none: see object_type).
ADDED_FIELDS = {"email_campaign": {"from_address_verified", "tracking"}, "dns_record": {"reason"}}
BY_TITLE = {e["title"]: e for e in EXAMPLES}

# Sending domains belong to another part of the service.
NOT_COVERED: set[str] = set()
# The mailbox-action examples and the action each queues.
MAILBOX_ACTIONS = {
    "Update message's IsRead status": "unread",
    "Batch update some messages IsRead status": "unread",
    "Batch move to trash": "trash",
    "Batch archive": "archive",
}
# The query each GET example's parameters section documents (the example paths abbreviate them).
QUERIES = {
    "Update an email campaign": "associations[]=email_campaign.recipients",
    "Get an email campaign": (
        "associations[]=email_campaign.emails,email_campaign.recipients,email_campaign_email.email"
    ),
    "Get all campaigns by brand": "associations[]=email_campaign.recipients",
    "Get an outlook campaign": "associations[]=email_campaign.emails&associations[]=email_campaign.recipients",
}
# Fields of a created campaign that must echo what the example sent (after the documented conversions).
ECHOED = (
    "id",
    "subject",
    "html",
    "text",
    "due_at",
    "individual",
    "headers",
    "tags",
    "notifications_enabled",
    "google_credential",
    "microsoft_credential",
    "include_signature",
    "archive",
)

EXAMPLE_USER = "80a227b2-29a0-11e7-b636-e4a7a08e15d4"
EXAMPLE_BRANDS = (
    "42fa6464-bcae-4928-bf2b-6670e576c1d9",
    "8db6d983-9e09-4d1e-b805-0856a88591a2",
    "2907d011-1266-4bcb-9202-4d24eb3a9f20",
)
EXAMPLE_GOOGLE = "94e5aa34-ba80-4223-a987-55e2aaffc258"
EXAMPLE_MICROSOFT = "86056c9a-e989-4177-a976-951fed3c36ca"
EXAMPLE_FILE = "572b8371-3d1d-4c14-950a-38a1cacad057"
# The published document hides its addresses behind this placeholder; it stands for a real one here.
HIDDEN_ADDRESS = "[email protected]"
ADDRESS = "jane.buyer@example.com"
# The document's replies name the message answered with a placeholder; In-Reply-To takes a real Message-ID.
IN_REPLY_TO = "<CAHd3xZ1@mail.gmail.com>"


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def object_type(value: dict[str, Any]) -> str:
    return "dns_record" if "record_type" in value else str(value.get("type"))


def assert_same_shape(example: Any, actual: Any, path: str = "data") -> None:
    if example is None:
        return  # a null in the document says nothing about the type
    assert actual is not None, f"{path}: null where the document has {example!r}"
    assert kind(actual) == kind(example), f"{path}: {kind(actual)} where the document has {kind(example)}"
    if isinstance(example, dict):
        added = ADDED_FIELDS.get(object_type(example), set())
        assert set(actual) - added == set(example), (
            f"{path}: missing {sorted(set(example) - set(actual))}, extra {sorted(set(actual) - set(example))}"
        )
        for key, value in example.items():
            assert_same_shape(value, actual[key], f"{path}.{key}")
    elif isinstance(example, list) and example:
        assert actual, f"{path}: empty where the document has items"
        for i, item in enumerate(actual):
            assert_same_shape(example[min(i, len(example) - 1)], item, f"{path}.{i}")


class Replay:
    def __init__(self, actor: Actor, session: AsyncSession, ids: dict[str, str]) -> None:
        self.actor, self.session, self.ids = actor, session, ids

    def mapped(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.mapped(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mapped(v) for v in value]
        if not isinstance(value, str):
            return value
        return self.ids.get(value, value).replace(HIDDEN_ADDRESS, ADDRESS)

    async def run(self, title: str, *, path_ids: dict[str, str] | None = None) -> Any:
        example = BY_TITLE[title]
        path, _, query = example["path"].partition("?")
        for name, value in (path_ids or {}).items():
            path = path.replace(f":{name}", value)
        query = QUERIES.get(title, query)
        if query:
            path += "?" + query
        body = self.mapped(example["request"])
        brand = body.get("brand") if isinstance(body, dict) else None
        headers = {"X-Rechat-Brand": brand} if brand else {}
        method = getattr(self.actor, example["method"].lower())
        response = await (
            method(path, body, headers=headers) if example["request"] is not None else method(path, headers=headers)
        )
        assert response.status_code == example["status"], response.text
        if example["response"] is None:
            return None
        answer = response.json()
        assert_same_shape(self.mapped(example["response"]), answer, title)
        return answer

    async def execute(self, campaign: str, example_email: dict[str, Any]) -> None:
        """Stand in for the sender: mark the campaign executed with one sent email, as the document shows."""
        email = self.mapped(example_email["email"])
        await self.session.execute(
            text(
                "UPDATE email_campaigns SET executed_at = now(), recipients_count = 1, sent = 1, delivered = 1 "
                "WHERE id = :id"
            ),
            {"id": campaign},
        )
        email_id = (
            await self.session.execute(
                text("""INSERT INTO emails ("from", "to", subject, headers, esp_message_id, domain, campaign, tags,
                                        delivered, sent_at)
                    VALUES (:from, :to, :subject, CAST(:headers AS jsonb), :esp_message_id, :domain, :campaign, :tags,
                            1, now()) RETURNING id"""),
                {
                    "from": email["from"],
                    "to": email["to"],
                    "subject": email["subject"],
                    "headers": json.dumps(email["headers"]),
                    "esp_message_id": email["mailgun_id"],
                    "domain": email["domain"],
                    "campaign": campaign,
                    "tags": email["tags"],
                },
            )
        ).scalar_one()
        await self.session.execute(
            text(
                "INSERT INTO email_campaign_emails (campaign, seq, email, email_address, send_type, delivered) "
                "VALUES (:campaign, 1, :email, :address, 'To', 1)"
            ),
            {"campaign": campaign, "email": email_id, "address": email["to"][0]},
        )
        await self.session.commit()


@pytest.fixture
async def replay(world: World, session: AsyncSession) -> Replay:
    actor = await world.brand_admin(first="Unit", last="Test")
    brands = [str(actor.brand)]
    for name in ("Gmail office", "Outlook office"):
        brands.append(actor.data(await actor.post("/brands", {"name": name}))["id"])
    # The document's Gmail and Outlook examples each live in a brand of their own.
    google = await world.google_credential(dataclasses.replace(actor, brand=uuid.UUID(brands[1])))
    microsoft = await world.microsoft_credential(dataclasses.replace(actor, brand=uuid.UUID(brands[2])))
    file_id = (
        await session.execute(
            text(
                "INSERT INTO files (created_by, path, name, mime, size) VALUES (:user, 'u/logo.png', 'logo.png', "
                "'image/png', 1024) RETURNING id"
            ),
            {"user": actor.user},
        )
    ).scalar_one()
    await session.commit()
    ids = {
        EXAMPLE_USER: str(actor.user),
        EXAMPLE_GOOGLE: google,
        EXAMPLE_MICROSOFT: microsoft,
        EXAMPLE_FILE: str(file_id),
        "in_reply_to_id": IN_REPLY_TO,
        **dict(zip(EXAMPLE_BRANDS, brands, strict=True)),
    }
    return Replay(actor, session, ids)


def test_every_campaign_example_is_replayed() -> None:
    replayed = {
        "Schedule an email campaign",
        "Update an email campaign",
        "Update an email campaign's notifications_enabled",
        "Get an email campaign",
        "Get all campaigns by brand",
        "Schedule a gmail message",
        "Schedule a gmail message with attachments",
        "Schedule an outlook message",
        "Schedule a reply to gmail message",
        "Schedule a reply to outlook message",
        "Get a gmail campaign",
        "Get an outlook campaign",
        "Get User Email Quota by brand",
        "Get emails of a campaign",
        "Attempt at verifying user's domain",
        "Get information about the domain of the current user",
        "Upload an Attachment",
        *MAILBOX_ACTIONS,
    }
    assert replayed | NOT_COVERED == set(BY_TITLE)


async def test_upload_example(replay: Replay) -> None:
    """The document uploads logo.png and answers the file object; the same upload here answers the same shape."""
    example = BY_TITLE["Upload an Attachment"]
    response = await post_upload(replay.actor, UPLOAD_PNG, "logo.png", origin="gmail")
    assert response.status_code == example["status"], response.text
    answer = response.json()
    assert_same_shape(replay.mapped(example["response"]), answer, "Upload an Attachment")
    data, expected = answer["data"], example["response"]["data"]
    for field in ("name", "public", "type", "mime", "deleted_at"):
        assert data[field] == expected[field], field
    assert data["created_by"] == str(replay.actor.user)
    assert data["path"].startswith(f"{replay.actor.user}/") and data["path"].endswith(".png")


@pytest.mark.parametrize(
    "title",
    [
        "Schedule an email campaign",
        "Schedule a gmail message",
        "Schedule a gmail message with attachments",
        "Schedule an outlook message",
        "Schedule a reply to gmail message",
        "Schedule a reply to outlook message",
    ],
)
async def test_schedule_examples(replay: Replay, title: str) -> None:
    answer = await replay.run(title)
    expected = replay.mapped(BY_TITLE[title]["response"]["data"])
    for field in ECHOED:
        assert answer["data"][field] == expected[field], field
    assert answer["data"]["created_by"] == str(replay.actor.user)


async def test_update_and_notification_examples(replay: Replay) -> None:
    campaign = BY_TITLE["Update an email campaign"]["request"]["id"]
    first = replay.mapped(BY_TITLE["Schedule an email campaign"]["request"])
    first["id"] = campaign
    replay.actor.data(await replay.actor.post("/emails", first))

    answer = await replay.run("Update an email campaign", path_ids={"id": campaign})
    expected = replay.mapped(BY_TITLE["Update an email campaign"]["response"]["data"])
    for field in ("subject", "html", "text", "individual", "tags", "notifications_enabled", "due_at"):
        assert answer["data"][field] == expected[field], field
    assert [r["email"] for r in answer["data"]["recipients"]] == [ADDRESS]

    await replay.run("Update an email campaign's notifications_enabled", path_ids={"id": campaign})
    # The example turns notifications off; turning them on again must read back.
    await replay.actor.put(f"/emails/{campaign}/notifications", {"status": True})
    got = replay.actor.data(await replay.actor.get(f"/emails/{campaign}"))
    assert got["notifications_enabled"] is True


async def test_read_examples_of_an_executed_campaign(replay: Replay) -> None:
    await replay.run("Schedule an email campaign")
    campaign = BY_TITLE["Schedule an email campaign"]["request"]["id"]
    example = BY_TITLE["Get an email campaign"]["response"]["data"]
    await replay.execute(campaign, example["emails"][0])

    answer = await replay.run("Get an email campaign", path_ids={"id": campaign})
    row = answer["data"]["emails"][0]
    assert row["email_address"] == ADDRESS and row["email"]["mailgun_id"] == "example-mailgun-id-email-1"
    assert answer["data"]["sent"] == 1 and answer["data"]["recipients_count"] == 1

    emails = await replay.run("Get emails of a campaign", path_ids={"campaign": campaign})
    assert emails["info"] == {"count": 1, "total": 1}

    listed = await replay.run("Get all campaigns by brand", path_ids={"brand": str(replay.actor.brand)})
    assert [c["id"] for c in listed["data"]] == [campaign]
    assert listed["info"] == {"count": 1, "total": 1}

    quota = await replay.run("Get User Email Quota by brand", path_ids={"brand": str(replay.actor.brand)})
    assert quota["data"] == {"executed": 1, "scheduled": 0, "quota": 30000}  # its one recipient, through the ESP


async def test_gmail_and_outlook_read_examples(replay: Replay) -> None:
    await replay.run("Schedule a gmail message")
    gmail = BY_TITLE["Schedule a gmail message"]["request"]["id"]
    answer = await replay.run("Get a gmail campaign", path_ids={"id": gmail})
    assert [(r["send_type"], r["email"]) for r in answer["data"]["recipients"]] == [
        ("To", ADDRESS),
        ("CC", ADDRESS),
        ("BCC", ADDRESS),
    ]
    assert answer["data"]["attachments"] is None and answer["data"]["emails"] is None

    await replay.run("Schedule a reply to outlook message")
    outlook = BY_TITLE["Schedule a reply to outlook message"]["request"]["id"]
    answer = await replay.run("Get an outlook campaign", path_ids={"id": outlook})
    assert answer["data"]["headers"] == {"message_id": "message_id"}


async def test_attachments_example_reads_back(replay: Replay) -> None:
    await replay.run("Schedule a gmail message with attachments")
    campaign = BY_TITLE["Schedule a gmail message with attachments"]["request"]["id"]
    got = replay.actor.data(await replay.actor.get(f"/emails/{campaign}?associations[]=email_campaign.attachments"))
    kinds = sorted(
        (a["file"] is not None, a["url"] is not None, a["name"], a["content_id"]) for a in got["attachments"]
    )
    assert kinds == [(False, True, "custom_name.jpg", "content_id"), (True, False, None, "content_id")]


async def test_mailbox_action_examples(replay: Replay) -> None:
    credential = replay.ids[EXAMPLE_GOOGLE]
    for title in MAILBOX_ACTIONS:
        assert await replay.run(title, path_ids={"credentialId": credential, "messageId": "18c2f0e9a1b2c3d4"}) is None
    jobs = (
        await replay.session.execute(
            text("SELECT args FROM procrastinate_jobs WHERE task_name = 'mailroom.mailbox_action' ORDER BY id")
        )
    ).scalars()
    example_ids = BY_TITLE["Batch archive"]["request"]["messageIds"]
    assert [(j["kind"], j["credential"], j["action"], j["message_ids"]) for j in jobs] == [
        ("google", credential, "unread", ["18c2f0e9a1b2c3d4"]),
        ("google", credential, "unread", example_ids),
        ("google", credential, "trash", example_ids),
        ("google", credential, "archive", example_ids),
    ]


async def test_domain_examples(replay: Replay, app: FastAPI) -> None:
    """The document's user is at rechat.com; ours at example.com, set up at Mailgun under the same pattern."""
    with mailgun_domains_server() as (mg, _), dns_server() as dns:
        changes = {"transport": "mailgun", "mailgun_api_url": mg.url, "mailgun_api_key": "key-test",
                   "mailgun_domain": "mg.example.com", "dns_servers": dns.address}  # fmt: skip
        with app_settings(app, **changes):
            records = (await replay.run("Attempt at verifying user's domain"))["data"]
            assert all(r["is_active"] is False and r["reason"] for r in records)
            domain = (await replay.run("Get information about the domain of the current user"))["data"]
    example = BY_TITLE["Get information about the domain of the current user"]["response"]["data"]
    assert domain["mailgun_domain"] == example["mailgun_domain"].replace("rechat.com", "example.com")
    assert domain["domain"] == "example.com"
