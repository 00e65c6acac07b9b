"""Bad input to the campaign endpoints: a 4xx naming the field, and not one row written."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.campaigns import assert_refused, campaign, row_counts
from tests.support.world import Actor, World


@pytest.fixture
async def admin(world: World) -> Actor:
    return await world.brand_admin()


CASES: list[tuple[str, Any, str]] = [
    ("malformed JSON", b'{"to": [', "body"),
    ("body is not an object", b"[1, 2]", "body"),
    ("subject of the wrong type", campaign(subject=5), "subject"),
    ("html of the wrong type", campaign(html=["x"]), "html"),
    ("missing subject", campaign(subject=...), "subject"),
    ("missing to", campaign(to=...), "to"),
    ("empty to", campaign(to=[]), "to"),
    ("to not an array", campaign(to={"recipient_type": "Email", "email": "a@example.com"}), "to"),
    (
        "unknown recipient_type",
        campaign(to=[{"recipient_type": "Fax", "email": "a@example.com"}]),
        "to.0.recipient_type",
    ),
    (
        "unknown send_type",
        campaign(cc=[{"recipient_type": "Email", "email": "a@example.com", "send_type": "Bcc"}]),
        "cc.0.send_type",
    ),
    (
        "send_type contradicting its array",
        campaign(cc=[{"recipient_type": "Email", "email": "a@example.com", "send_type": "To"}]),
        "cc.0.send_type",
    ),
    ("Email recipient without email", campaign(to=[{"recipient_type": "Email"}]), "email"),
    ("invalid address", campaign(to=[{"recipient_type": "Email", "email": "not-an-address"}]), "to.0.email"),
    ("Tag recipient without tag", campaign(bcc=[{"recipient_type": "Tag"}]), "tag"),
    ("List recipient without list", campaign(to=[{"recipient_type": "List"}]), "list"),
    ("field that does not apply", campaign(to=[{"recipient_type": "AllContacts", "tag": "x"}]), "tag"),
    ("individual as a string", campaign(individual="false"), "individual"),
    ("notifications_enabled as a number", campaign(notifications_enabled=1), "notifications_enabled"),
    ("tracking as a string", campaign(tracking="no"), "tracking"),
    ("due_at not a date", campaign(due_at="next tuesday"), "due_at"),
    ("due_at past what can be stored", campaign(due_at="9999-12-31T23:59:59-05:00"), "due_at"),
    ("tags not strings", campaign(tags=[1]), "tags.0"),
    ("headers not strings", campaign(headers={"in_reply_to": {"x": 1}}), "headers.in_reply_to"),
    (
        "both credentials",
        campaign(
            google_credential="94e5aa34-ba80-4223-a987-55e2aaffc258",
            microsoft_credential="86056c9a-e989-4177-a976-951fed3c36ca",
        ),
        "google_credential",
    ),
    (
        "attachment with file and url",
        campaign(
            attachments=[
                {"file": "572b8371-3d1d-4c14-950a-38a1cacad057", "url": "https://x.example/a.png", "name": "a.png"}
            ]
        ),
        "attachments.0",
    ),
    ("attachment url without name", campaign(attachments=[{"url": "https://x.example/a.png"}]), "attachments.0"),
    (
        "attachment url not http",
        campaign(attachments=[{"url": "file:///etc/passwd", "name": "p"}]),
        "attachments.0.url",
    ),
    ("unknown field", campaign(sender="me"), "sender"),
    ("template that does not compile", campaign(html="<p>{{ recipient.first_name </p>"), "html"),
    (
        "unknown contact",
        campaign(to=[{"recipient_type": "Contact", "contact": "1b7c2e36-3f5c-4d0b-9d57-0b6a4f8d2b11"}]),
        "to.0.contact",
    ),
    (
        "unknown list",
        campaign(cc=[{"recipient_type": "List", "list": "1b7c2e36-3f5c-4d0b-9d57-0b6a4f8d2b11"}]),
        "cc.0.list",
    ),
    (
        "unknown agent",
        campaign(to=[{"recipient_type": "Agent", "agent": "1b7c2e36-3f5c-4d0b-9d57-0b6a4f8d2b11"}]),
        "to.0.agent",
    ),
    (
        "unknown brand",
        campaign(to=[{"recipient_type": "Brand", "brand": "1b7c2e36-3f5c-4d0b-9d57-0b6a4f8d2b11"}]),
        "to.0.brand",
    ),
    ("from who does not exist", campaign(**{"from": "1b7c2e36-3f5c-4d0b-9d57-0b6a4f8d2b11"}), "from"),
]


@pytest.mark.parametrize(("case", "body", "field"), CASES, ids=[c[0] for c in CASES])
async def test_bad_campaign_is_refused(admin: Actor, session: AsyncSession, case: str, body: Any, field: str) -> None:
    await assert_refused(admin, session, body, field)


async def test_unknown_uploaded_file_is_not_found(admin: Actor, session: AsyncSession) -> None:
    body = campaign(attachments=[{"file": "1b7c2e36-3f5c-4d0b-9d57-0b6a4f8d2b11"}])
    await assert_refused(admin, session, body, "attachments.0.file", status=404)


async def test_individual_endpoint_refuses_cc_and_bcc(admin: Actor, session: AsyncSession) -> None:
    body = campaign(cc=[{"recipient_type": "Email", "email": "b@example.com"}])
    await assert_refused(admin, session, body, "cc", path="/emails/individual")


async def test_an_empty_brand_header_is_refused_not_ignored(admin: Actor, session: AsyncSession) -> None:
    # An empty X-Rechat-Brand used to count as absent, so the body's brand (or none) decided silently.
    for body in (campaign(), campaign(brand=str(admin.brand))):
        response = await admin.post("/emails", body, headers={"X-Rechat-Brand": ""})
        assert response.status_code == 400 and response.json()["message"].startswith("X-Rechat-Brand:")
    assert (await row_counts(session))["email_campaigns"] == 0


async def test_objects_of_another_brand_are_refused(world: World, admin: Actor, session: AsyncSession) -> None:
    other = await world.brand_admin()
    contact = (await world.contacts(other, [{"emails": ["x@example.com"]}]))[0]["id"]
    crm_list = (await world.crm_list(other, "Buyers", [contact]))["id"]
    await assert_refused(
        admin, session, campaign(to=[{"recipient_type": "Contact", "contact": contact}]), "to.0.contact"
    )
    await assert_refused(admin, session, campaign(bcc=[{"recipient_type": "List", "list": crm_list}]), "bcc.0.list")
    await assert_refused(
        admin, session, campaign(to=[{"recipient_type": "Brand", "brand": str(other.brand)}]), "to.0.brand"
    )
    await assert_refused(admin, session, campaign(**{"from": str(other.user)}), "from")
    # Naming the other brand as the active one is a 403, whatever the body holds.
    response = await admin.post("/emails", campaign(), headers={"X-Rechat-Brand": str(other.brand)})
    assert response.status_code == 403 and "brand" in response.json()["message"]
    assert (await row_counts(session))["email_campaigns"] == 0


async def test_credentials_must_be_live_the_senders_and_able_to_send(
    world: World, admin: Actor, session: AsyncSession
) -> None:
    read_only = await world.google_credential(admin, scopes=["profile", "mail.read"])
    await assert_refused(admin, session, campaign(google_credential=read_only), "google_credential")
    outlook_send_only = await world.microsoft_credential(admin, scopes=["mail.send"])
    await assert_refused(admin, session, campaign(microsoft_credential=outlook_send_only), "microsoft_credential")

    revoked = await world.google_credential(admin)
    assert (await admin.post(f"/users/self/google-credentials/{revoked}/revoke")).status_code == 200
    await assert_refused(admin, session, campaign(google_credential=revoked), "google_credential")

    deleted = await world.google_credential(admin)
    assert (await admin.delete(f"/users/self/google-credentials/{deleted}")).status_code == 204
    await assert_refused(admin, session, campaign(google_credential=deleted), "google_credential")

    colleague = await world.member(admin)
    theirs = await world.google_credential(colleague)
    await assert_refused(admin, session, campaign(google_credential=theirs), "google_credential")

    good = await world.google_credential(admin)
    assert (await admin.post("/emails", campaign(google_credential=good))).status_code == 200


async def test_from_must_be_a_member_of_the_brand(world: World, admin: Actor, session: AsyncSession) -> None:
    outsider = await world.brand_admin()
    await assert_refused(admin, session, campaign(**{"from": str(outsider.user)}), "from")
    colleague = await world.member(admin)
    created = admin.data(await admin.post("/emails", campaign(**{"from": str(colleague.user)})))
    assert created["created_by"] == str(admin.user)


async def test_put_on_an_executed_campaign_is_a_conflict(admin: Actor, session: AsyncSession) -> None:
    created = admin.data(await admin.post("/emails", campaign()))
    await session.execute(text("UPDATE email_campaigns SET executed_at = now() WHERE id = :id"), {"id": created["id"]})
    await session.commit()
    response = await admin.put(f"/emails/{created['id']}", campaign(subject="Changed"))
    assert response.status_code == 409 and "id" in response.json()["message"]
    got = admin.data(await admin.get(f"/emails/{created['id']}"))
    assert got["subject"] == "Open house"


async def test_a_client_id_is_used_once(admin: Actor, session: AsyncSession) -> None:
    body = campaign(id="6f1de2a4-5a8e-4d55-9a43-2f0f3f1d6c11")
    assert admin.data(await admin.post("/emails", body))["id"] == body["id"]
    await assert_refused(admin, session, body, "id", status=409)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("order=-subject", "order"),
        ("order=created_at;drop table x", "order"),
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        ("start=-1", "start"),
        ("start=99999999999999999999", "start"),
        ("status=sent", "status"),
        ("associations[]=email.password", "associations"),
    ],
)
async def test_bad_list_parameters(admin: Actor, query: str, field: str) -> None:
    response = await admin.get(f"/brands/{admin.brand}/emails/campaigns?{query}")
    assert response.status_code == 400, response.text
    assert field in response.json()["message"]


async def test_bad_campaign_emails_parameters(admin: Actor) -> None:
    created = admin.data(await admin.post("/emails", campaign()))
    for query, field in (("order=-subject", "order"), ("limit=5000", "limit"), ("start=9223372036854775808", "start")):
        response = await admin.get(f"/emails/{created['id']}/emails?{query}")
        assert response.status_code == 400 and field in response.json()["message"], response.text


async def test_no_token_or_a_wrong_one_is_401(admin: Actor) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = await admin.client.get(f"/brands/{admin.brand}/emails/campaigns", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "Unauthorized"
