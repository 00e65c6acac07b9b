"""Composing and editing a campaign in the workspace: the API's rules, its answers, its refusals, as pages."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.campaigns import campaign, row_counts
from tests.support.workspace import COMPOSE_FORM as FORM
from tests.support.workspace import browser, csrf_of, new_page, signed_in
from tests.support.world import World


async def post_form(web: httpx.AsyncClient, path: str, **fields: Any) -> httpx.Response:
    """The form as the page serves it, filled in and sent with its CSRF token."""
    page = await web.get(path)
    assert page.status_code == 200, page.text
    return await web.post(path, data={"csrf": csrf_of(page), "action": "save", **FORM, **fields})


def campaign_of(response: httpx.Response) -> str:
    found = re.search(r"/campaigns/([0-9a-f-]{36})/", response.headers["location"])
    assert found is not None, response.headers["location"]
    return found.group(1)


async def stored(session: AsyncSession) -> list[Any]:
    return list((await session.execute(text("SELECT id, subject, due_at FROM email_campaigns"))).all())


async def test_a_draft_composed_in_the_form_is_what_the_api_answers(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    tagged = await world.contact(ann, "tia@example.com", first_name="Tia", tags=["Buyers"])
    listed = await world.crm_list(ann, "Sellers", [tagged])
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        listing = (await web.get(f"/app/brands/{ann.brand}/campaigns")).text
        assert f'href="/app/brands/{ann.brand}/campaigns/new"' in listing
        page = (await web.get(new_page(ann))).text
        assert 'value="Buyers"' in page and "Sellers" in page and "in UTC" in page
        saved = await post_form(
            web, new_page(ann), tags="Buyers", lists=listed["id"], everyone="1", tracking_shown="1", tracking=""
        )
    assert saved.status_code == 303 and saved.headers["location"] == f"/app/brands/{ann.brand}/campaigns"
    ((campaign_id, _, due),) = await stored(session)
    assert due is None
    answer = ann.data(await ann.get(f"/emails/{campaign_id}", params={"associations[]": "email_campaign.recipients"}))
    assert answer["subject"] == FORM["subject"] and answer["html"] == FORM["html"] and answer["due_at"] is None
    assert answer["tracking"] is False and answer["created_by"] == str(ann.user)
    kinds = sorted((r["recipient_type"], r["email"] or r["tag"] or "") for r in answer["recipients"])
    assert kinds == [
        ("AllContacts", ""),
        ("Email", "jane@example.com"),
        ("Email", "joe@example.com"),
        ("List", ""),
        ("Tag", "Buyers"),
    ]


async def test_refused_fields_are_shown_next_to_them_and_nothing_is_stored(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    before = await row_counts(session)
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        bad_address = await post_form(web, new_page(ann), addresses="not-an-address", subject="Kept <b>as typed</b>")
        no_body = await post_form(web, new_page(ann), html="", text="")
        no_one = await post_form(web, new_page(ann), addresses="")
        bad_time = await post_form(web, new_page(ann), schedule="at", send_at="tomorrow")
        bad_template = await post_form(web, new_page(ann), html="<p>\n{{ recipient.first_name }\n</p>")
    for response in (bad_address, no_body, no_one, bad_time, bad_template):
        assert response.status_code == 400 and "was not saved" in response.text, response.text
    assert 'id="recipients-error"' in bad_address.text and "not-an-address" in bad_address.text
    assert 'value="Kept &lt;b&gt;as typed&lt;/b&gt;"' in bad_address.text
    assert 'id="html-error"' in no_body.text and "neither" in no_body.text
    assert "choose at least one recipient" in no_one.text
    assert 'id="send_at-error"' in bad_time.text
    assert re.search(r'id="html-error">[^<]*line 2', bad_template.text), bad_template.text
    assert await row_counts(session) == before


async def test_preview_renders_for_a_chosen_contact_in_a_strictly_confined_document(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    other = await world.brand_admin()
    tia = await world.contact(ann, "tia@example.com", first_name="Tia")
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        pressed = await post_form(web, new_page(ann), action="preview", preview_contact=tia["id"], contacts=tia["id"])
        assert pressed.status_code == 303 and "preview=1" in pressed.headers["location"]
        page = await web.get(pressed.headers["location"])
        assert "Open house on Tia&#39;s street" in page.text and "tia@example.com" in page.text
        document = re.search(r'<iframe sandbox src="([^"]+)"', page.text)
        assert document is not None
        shown = await web.get(document.group(1).replace("&amp;", "&"))
        assert shown.status_code == 200 and "<p>Hello Tia</p>" in shown.text
        policy = shown.headers["content-security-policy"]
        assert policy.startswith("default-src 'none'") and "sandbox" in policy and "script" not in policy
        # Saved as a draft: previewing schedules nothing.
        ((_, _, due),) = await stored(session)
        assert due is None
    async with browser(app) as stranger:
        assert (await stranger.get(document.group(1))).status_code == 404
        await signed_in(stranger, app, other.user)
        assert (await stranger.get(document.group(1))).status_code == 404


async def test_a_template_error_is_shown_at_its_line(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        pressed = await post_form(web, new_page(ann), action="preview", html="<p>a</p>\n<p>{{ nope.missing }}</p>")
    assert pressed.status_code == 400
    assert re.search(r'id="html-error">[^<]*line 2', pressed.text), pressed.text


async def test_a_test_to_me_is_queued_and_names_where_it_goes(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    unconfirmed = await world.member(ann, confirmed=False)
    email = (await session.execute(text("SELECT email FROM users WHERE id = :id"), {"id": ann.user})).scalar_one()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        pressed = await post_form(web, new_page(ann), action="test")
        assert pressed.status_code == 303
        page = await web.get(pressed.headers["location"])
        assert "A test is on its way to" in page.text and email in page.text
    jobs = await session.execute(text("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'mailroom.send_test'"))
    assert jobs.scalar_one() == 1
    async with browser(app) as web:
        await signed_in(web, app, unconfirmed.user)
        refused = await post_form(web, new_page(ann), action="test")
        assert (
            refused.status_code == 200 and "The test was not sent" in refused.text and "not confirmed" in refused.text
        )


async def test_sending_is_confirmed_with_the_recipient_count_then_scheduled(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    for n in range(3):
        await world.contact(ann, f"buyer{n}@example.com", tags=["Buyers"])
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        pressed = await post_form(web, new_page(ann), tags="Buyers", schedule="at", send_at="2031-05-01T15:00")
        assert pressed.status_code == 303 and "/confirm?" in pressed.headers["location"]
        campaign_id = campaign_of(pressed)
        confirm_page = await web.get(pressed.headers["location"])
        assert "<strong>5</strong> recipients" in confirm_page.text  # three tagged contacts, jane and joe
        assert "2031-05-01 15:00 UTC" in confirm_page.text
        # Not yet scheduled: it waits for the press.
        assert ann.data(await ann.get(f"/emails/{campaign_id}"))["due_at"] is None
        path = f"/app/brands/{ann.brand}/campaigns/{campaign_id}/confirm"
        assert (await web.post(path, data={"schedule": "at", "send_at": "2031-05-01T15:00"})).status_code == 403
        assert ann.data(await ann.get(f"/emails/{campaign_id}"))["due_at"] is None
        done = await web.post(
            path, data={"csrf": csrf_of(confirm_page), "schedule": "at", "send_at": "2031-05-01T15:00"}
        )
    assert done.status_code == 303
    assert (
        ann.data(await ann.get(f"/emails/{campaign_id}"))["due_at"] == datetime(2031, 5, 1, 15, tzinfo=UTC).timestamp()
    )


async def test_send_now_is_due_at_the_press(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        pressed = await post_form(web, new_page(ann), schedule="now")
        page = await web.get(pressed.headers["location"])
        assert "as soon as you confirm" in page.text and "<strong>2</strong> recipients" in page.text
        before = datetime.now(UTC).timestamp()
        path = f"/app/brands/{ann.brand}/campaigns/{campaign_of(pressed)}/confirm"
        assert (await web.post(path, data={"csrf": csrf_of(page), "schedule": "now"})).status_code == 303
    due = ann.data(await ann.get(f"/emails/{campaign_of(pressed)}"))["due_at"]
    assert before - 1 <= due <= datetime.now(UTC).timestamp() + 1


async def test_editing_keeps_the_form_and_a_sent_campaign_is_refused(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    draft = ann.data(await ann.post("/emails", campaign(**{"subject": "Before", "due_at": None})))
    sent = ann.data(await ann.post("/emails", campaign(subject="Gone")))
    await session.execute(text("UPDATE email_campaigns SET executed_at = now() WHERE id = :id"), {"id": sent["id"]})
    await session.commit()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        edit = f"/app/brands/{ann.brand}/campaigns/{draft['id']}/edit"
        page = (await web.get(edit)).text
        assert 'value="Before"' in page and "jane@example.com" in page
        # The text the service made from the html shows as what was typed: nothing, so it follows the html.
        assert 'name="text" rows="4"></textarea>' in page
        saved = await post_form(web, edit, subject="After")
        assert saved.status_code == 303
        refused = await web.get(f"/app/brands/{ann.brand}/campaigns/{sent['id']}/edit")
        assert refused.status_code == 409 and "already been sent" in refused.text
        assert (await web.post(f"/app/brands/{ann.brand}/campaigns/{sent['id']}/edit", data={})).status_code == 409
    assert ann.data(await ann.get(f"/emails/{draft['id']}"))["subject"] == "After"
    assert ann.data(await ann.get(f"/emails/{sent['id']}"))["subject"] == "Gone"


async def test_another_brands_campaign_answers_404(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    other = await world.brand_admin()
    theirs = other.data(await other.post("/emails", campaign(**{"due_at": None})))
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        for path in (
            f"/app/brands/{other.brand}/campaigns/{theirs['id']}/edit",
            f"/app/brands/{ann.brand}/campaigns/{theirs['id']}/edit",
            f"/app/brands/{ann.brand}/campaigns/{uuid.uuid4()}/edit",
            f"/app/brands/{other.brand}/campaigns/new",
            f"/app/brands/{other.brand}/campaigns/{theirs['id']}/confirm",
        ):
            assert (await web.get(path)).status_code == 404, path
        page = await web.get(new_page(ann))
        posted = await web.post(f"/app/brands/{other.brand}/campaigns/new", data={"csrf": csrf_of(page), **FORM})
        assert posted.status_code == 404


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    draft = ann.data(await ann.post("/emails", campaign(**{"subject": "Before", "due_at": None})))
    before = await row_counts(session)
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        for path in (new_page(ann), f"/app/brands/{ann.brand}/campaigns/{draft['id']}/edit"):
            for token in ({}, {"csrf": "forged"}):
                response = await web.post(path, data={**FORM, "action": "save", **token})
                assert response.status_code == 403 and "could not be accepted" in response.text
    assert await row_counts(session) == before
    assert ann.data(await ann.get(f"/emails/{draft['id']}"))["subject"] == "Before"


async def test_an_agent_cannot_send_as_another_member(world: World, app: FastAPI, session: AsyncSession) -> None:
    ann = await world.brand_admin()
    bob = await world.member(ann, role="Agent")
    before = await row_counts(session)
    async with browser(app) as web:
        await signed_in(web, app, bob.user)
        page = (await web.get(new_page(bob))).text
        # Only themself is offered...
        senders = page.split('id="sender"')[1].split("</select>")[0]
        assert re.findall(r'<option value="([^"]+)"', senders) == [str(bob.user)]
        # ...and a sender edited into the form is refused by the API's rule, next to the field.
        refused = await post_form(web, new_page(bob), sender=str(ann.user))
    assert refused.status_code == 400 and 'id="sender-error"' in refused.text and "only an Admin" in refused.text
    assert await row_counts(session) == before
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = (await web.get(new_page(ann))).text
        assert f'value="{bob.user}"' in page
        assert (await post_form(web, new_page(ann), sender=str(bob.user))).status_code == 303


async def test_markup_in_subjects_and_contact_names_is_shown_as_text(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    probe = "<script>alert(1)</script>"
    await world.contact(ann, "x@example.com", first_name=probe, last_name='"><img src=x onerror=alert(2)>')
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = await post_form(web, new_page(ann), action="search", contact_search="script", subject=probe)
        pressed = await post_form(web, new_page(ann), action="preview", subject=probe)
        preview = await web.get(pressed.headers["location"])
    for shown in (page.text, preview.text):
        assert "<script" not in shown and "<img" not in shown and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "onerror=alert(2)&gt;" in page.text


async def test_junk_in_any_field_is_answered_with_the_form_never_a_500(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    before = await row_counts(session)
    junk: list[dict[str, str]] = [
        {"contacts": "not-an-id"},
        {"lists": str(uuid.uuid4())},
        {"sender": "nobody"},
        {"mailbox": "google:nope"},
        # Not addressed to each recipient by name, so it is one shared message and the mailbox is checked.
        {"mailbox": f"microsoft:{uuid.uuid4()}", "subject": "Plain", "html": "<p>Plain</p>"},
        {"subject": "nul \x00 inside"},
        {"schedule": "at", "send_at": "2031-13-45T99:99"},
        {"tags": "x" * 300},
        {"addresses": "a@b.c, @@@"},
    ]
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        for fields in junk:
            response = await post_form(web, new_page(ann), **fields)
            assert response.status_code == 400 and "was not saved" in response.text, (fields, response.text)
        odd = await post_form(web, new_page(ann), action="nothing-like-it", preview_contact="garbage")
        assert odd.status_code == 200
        edit = f"/app/brands/{ann.brand}/campaigns/{uuid.uuid4()}/edit"
        assert (await web.get(edit, params={"contact": "x" * 37})).status_code == 400
    assert await row_counts(session) == before


async def test_compose_pages_keep_the_workspace_policy_and_load_nothing_from_elsewhere(
    world: World, app: FastAPI
) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        pages = [await web.get(new_page(ann)), await post_form(web, new_page(ann), addresses="")]
        pressed = await post_form(web, new_page(ann), action="preview")
        pages.append(await web.get(pressed.headers["location"]))
        scheduled = await post_form(web, new_page(ann), schedule="now")
        pages.append(await web.get(scheduled.headers["location"]))
    for page in pages:
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        for reference in re.findall(r'\b(?:src|href|action)="([^"]*)"', page.text):
            assert reference.startswith(("/", "#")) and not reference.startswith("//"), reference
        assert "style=" not in page.text and "<script" not in page.text


async def test_a_connected_mailbox_is_offered_and_sends_the_campaign(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    gmail = await world.google_credential(ann)
    await world.microsoft_credential(ann, revoked=True)
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = (await web.get(new_page(ann))).text
        mailboxes = page.split('id="mailbox"')[1].split("</select>")[0]
        assert re.findall(r'<option value="([^"]*)"', mailboxes) == ["", f"google:{gmail}"]
        plain = {"subject": "Plain", "html": "<p>Plain</p>", "mailbox": f"google:{gmail}"}
        assert (await post_form(web, new_page(ann), **plain)).status_code == 303
    ((campaign_id, _, _),) = await stored(session)
    assert ann.data(await ann.get(f"/emails/{campaign_id}"))["google_credential"] == gmail


async def test_a_campaign_addressing_each_recipient_is_not_saved_to_go_from_a_mailbox(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    gmail = await world.google_credential(ann)
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        # FORM's subject names the recipient: the API would save it and quietly drop the mailbox.
        refused = await post_form(web, new_page(ann), mailbox=f"google:{gmail}")
    assert refused.status_code == 400 and 'id="mailbox-error"' in refused.text
    assert "goes one message to each recipient" in refused.text
    assert await stored(session) == []


async def test_tests_beyond_the_allowance_are_refused_with_the_wait(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        first = await post_form(web, new_page(ann), action="test")
        edit = first.headers["location"].split("?")[0]
        for _ in range(9):
            assert (await post_form(web, edit, action="test")).status_code == 303
        refused = await post_form(web, edit, action="test")
    assert refused.status_code == 200 and "The test was not sent" in refused.text and "minutes" in refused.text


async def test_a_campaign_with_parts_the_form_cannot_show_is_not_edited_here(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    copied = campaign(**{"due_at": None, "cc": [{"recipient_type": "Email", "email": "boss@example.com"}]})
    with_cc = ann.data(await ann.post("/emails", copied))
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = await web.get(f"/app/brands/{ann.brand}/campaigns/{with_cc['id']}/edit")
    assert page.status_code == 409 and "through the API" in page.text
    assert ann.data(await ann.get(f"/emails/{with_cc['id']}"))["subject"] == "Open house"
