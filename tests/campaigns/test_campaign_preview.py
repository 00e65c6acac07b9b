"""POST /emails/preview: a draft or a stored campaign rendered for a contact or a sample, sending nothing."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.campaigns import campaign, row_counts
from tests.support.world import Actor, World

PERSONAL = "<p>Hi {{ recipient.first_name or 'there' }}, {{ sender.display_name }} here</p>"


@pytest.fixture
async def admin(world: World) -> Actor:
    return await world.brand_admin(first="Sam", last="Seller")


async def test_a_draft_renders_for_a_contact_of_the_brand_and_nothing_is_stored(
    world: World, admin: Actor, session: AsyncSession
) -> None:
    contact = await world.contact(admin, "rose@example.com", first_name="Rose", last_name="<Lee>")
    before = await row_counts(session)
    body = {"subject": "For {{ recipient.display_name }}", "html": PERSONAL, "contact": contact["id"]}
    answer = admin.data(await admin.post("/emails/preview", body, headers={"X-Rechat-Brand": str(admin.brand)}))
    assert answer == {
        "subject": "For Rose <Lee>",
        "html": "<p>Hi Rose, Sam Seller here</p>",
        "text": "Hi Rose, Sam Seller here",
        "to": "rose@example.com",
    }
    assert await row_counts(session) == before


async def test_without_a_contact_the_sample_recipient_is_used(admin: Actor) -> None:
    answer = admin.data(
        await admin.post("/emails/preview", {"subject": "News", "text": "Hi {{ recipient.first_name }}"})
    )
    assert answer == {"subject": "News", "html": None, "text": "Hi Ann", "to": "ann@example.com"}


async def test_a_stored_campaign_renders_as_its_sender_wrote_it(world: World, admin: Actor) -> None:
    made = admin.data(await admin.post("/emails", campaign(subject="Open house", html=PERSONAL)))
    contact = await world.contact(admin, "rose@example.com", first_name="Rose")
    agent = await world.member(admin)
    # Another member of the brand previews the campaign: the sender is still its `from` user.
    answer = agent.data(await agent.post("/emails/preview", {"campaign": made["id"], "contact": contact["id"]}))
    assert answer["html"] == "<p>Hi Rose, Sam Seller here</p>" and answer["subject"] == "Open house"


async def test_another_brand_s_campaign_or_contact_is_not_found(world: World, admin: Actor) -> None:
    other = await world.brand_admin()
    theirs = other.data(await other.post("/emails", campaign()))
    their_contact = await world.contact(other, "x@example.com")
    refused = await admin.post("/emails/preview", {"campaign": theirs["id"]})
    assert refused.status_code == 404 and refused.json()["message"] == "id: no such campaign"
    body = {"subject": "s", "text": "t", "contact": their_contact["id"]}
    refused = await admin.post("/emails/preview", body, headers={"X-Rechat-Brand": str(admin.brand)})
    assert refused.status_code == 404 and refused.json()["message"].startswith("contact: ")
    # Naming the other brand does not help: the caller is no member of it.
    refused = await admin.post("/emails/preview", body, headers={"X-Rechat-Brand": str(other.brand)})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"subject": "s", "html": "<p>\n{{ recipient.frist_name }}</p>"}, "html: line 2: recipient.frist_name is not"),
        ({"subject": "s"}, "html: a campaign needs html or text (it has neither)"),
        ({"html": "<p>x</p>"}, "subject is required without campaign"),
        ({"campaign": "8c0e1c1e-9b4e-4f63-9d0a-2d8f1f0b8f11", "subject": "s"}, "give campaign or subject/html/text"),
    ],
)
async def test_a_preview_that_cannot_render_names_the_field(admin: Actor, body: dict[str, str], message: str) -> None:
    refused = await admin.post("/emails/preview", body)
    assert refused.status_code == 400 and message in refused.json()["message"], refused.text
