"""Attachments on the workspace's compose form: files chosen in the form are stored and attached as the API
stores and attaches them, and everything it refuses leaves no file behind."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.transports.base import ESP_SIZE_LIMIT
from mailroom.web.compose_files import COMPOSE_BODY_LIMIT
from tests.support.uploads import PDF, PNG, stored_files, upload
from tests.support.workspace import COMPOSE_FORM as FORM
from tests.support.workspace import browser, csrf_of, new_page, signed_in
from tests.support.world import Actor, World

PROBE = "<img src=x onerror=alert(1)>.pdf"


async def post_files(
    web: httpx.AsyncClient, path: str, files: list[tuple[str, bytes]], *, csrf: bool = True, **fields: Any
) -> httpx.Response:
    """The form as the page serves it, filled in, with the files chosen in its file input."""
    page = await web.get(path)
    assert page.status_code == 200, page.text
    data = {"action": "save", **FORM, **fields}
    if csrf:
        data["csrf"] = csrf_of(page)
    chosen = [("upload", (name, body, "application/octet-stream")) for name, body in files]
    return await web.post(path, data=data, files=chosen or [("upload", ("", b"", "application/octet-stream"))])


async def attachments_of(actor: Actor, campaign: str) -> list[dict[str, Any]]:
    answer = actor.data(await actor.get(f"/emails/{campaign}", params={"associations[]": "email_campaign.attachments"}))
    return list(answer["attachments"] or [])


async def file_count(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM files"))).scalar_one())


async def test_files_chosen_in_the_form_are_attached_as_the_api_attaches_them_and_can_be_taken_off(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        saved = await post_files(web, new_page(ann), [(PROBE, PDF), ("photo.png", PNG)])
        assert saved.status_code == 303, saved.text
        (campaign,) = (await session.execute(text("SELECT id::text FROM email_campaigns"))).scalars()
        attached = await attachments_of(ann, campaign)
        files = {
            r.id: r for r in (await session.execute(text("SELECT id::text, name, mime, size, brand FROM files"))).all()
        }
        assert sorted(files[str(a["file"])].name for a in attached) == sorted([PROBE, "photo.png"])
        # The type is what the bytes say, the brand the one composed in, the size what was sent.
        assert sorted((f.mime, f.size) for f in files.values()) == [
            ("application/pdf", len(PDF)),
            ("image/png", len(PNG)),
        ]
        assert {f.brand for f in files.values()} == {ann.brand}
        edit = f"/app/brands/{ann.brand}/campaigns/{campaign}/edit"
        page = (await web.get(edit)).text
        # A file's name is shown as text, never as markup.
        assert "onerror" in page and "<img src=x" not in page and "photo.png" in page
        kept = next(str(a["file"]) for a in attached if files[str(a["file"])].mime == "image/png")
        edited = await post_files(web, edit, [], attachments=kept)
        assert edited.status_code == 303, edited.text
    assert [str(a["file"]) for a in await attachments_of(ann, campaign)] == [kept]


async def test_a_file_kept_by_a_form_sent_back_with_errors_is_attached_on_the_next_press(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        refused = await post_files(web, new_page(ann), [("brochure.pdf", PDF)], addresses="nobody")
        assert refused.status_code == 400 and "brochure.pdf" in refused.text
        (file_id,) = (await session.execute(text("SELECT id::text FROM files"))).scalars()
        assert f'name="attachments" value="{file_id}" checked' in refused.text
        saved = await post_files(web, new_page(ann), [], attachments=file_id)
    assert saved.status_code == 303, saved.text
    (campaign,) = (await session.execute(text("SELECT id::text FROM email_campaigns"))).scalars()
    assert [str(a["file"]) for a in await attachments_of(ann, campaign)] == [file_id]


async def test_an_empty_or_oversized_file_is_refused_at_the_field_and_nothing_is_stored(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        empty = await post_files(web, new_page(ann), [("photo.png", PNG), ("notes.txt", b"")])
        assert (
            empty.status_code == 400 and "notes.txt is empty" in empty.text and 'id="attachments-error"' in empty.text
        )
        large = await post_files(web, new_page(ann), [("tour.mov", b"\0" * (ESP_SIZE_LIMIT + 1))])
        assert large.status_code == 400 and f"larger than the {ESP_SIZE_LIMIT:,} byte limit" in large.text
    assert await file_count(session) == 0 and stored_files(settings, ann.user) == []
    assert (await session.execute(text("SELECT count(*) FROM email_campaigns"))).scalar_one() == 0


async def test_files_are_not_stored_without_the_csrf_token_or_a_session(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        forged = await post_files(web, new_page(ann), [("brochure.pdf", PDF)], csrf=False)
        assert forged.status_code == 403
    async with browser(app) as stranger:
        anonymous = await stranger.post(new_page(ann), data=FORM, files=[("upload", ("brochure.pdf", PDF, "x/y"))])
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/app/sign-in")
        # Past the form's limit the body is refused before it is read.
        declared = await stranger.post(
            new_page(ann), content=b"x", headers={"Content-Length": str(COMPOSE_BODY_LIMIT + 1)}
        )
        assert declared.status_code == 413
    assert await file_count(session) == 0 and stored_files(settings, ann.user) == []


async def test_another_brands_file_cannot_be_attached_or_named_through_the_form(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    eve = await world.brand_admin()
    theirs = await upload(eve, PDF, "eve-secret-plan.pdf")
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        answer = await post_files(web, new_page(ann), [], attachments=theirs["id"])
    assert answer.status_code == 400 and "no such uploaded file" in answer.text
    assert "eve-secret-plan" not in answer.text
    assert (await session.execute(text("SELECT count(*) FROM email_campaigns"))).scalar_one() == 0
