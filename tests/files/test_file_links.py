"""Signed file links: what a browser or mail client fetching an uploaded file gets, with no API token."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.files.storage import link_signature
from mailroom.links import redact_path
from tests.support.campaigns import schedule
from tests.support.links import fake_dns, file_server
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.uploads import PDF, PNG, local_path, upload
from tests.support.world import Actor, World


@pytest.fixture
async def actor(world: World) -> Actor:
    return await world.brand_admin()


async def test_an_image_is_served_inline_through_its_link(actor: Actor, client: httpx.AsyncClient) -> None:
    file = await upload(actor, PNG, "logo.png")
    response = await client.get(local_path(file["url"]))  # no Authorization header
    assert response.status_code == 200, response.text
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["content-disposition"].startswith("inline;")
    assert 'filename="logo.png"' in response.headers["content-disposition"]


async def test_anything_but_an_image_is_downloaded_never_rendered(actor: Actor, client: httpx.AsyncClient) -> None:
    page = await upload(actor, b"<html><script>steal()</script></html>", "page.png", content_type="image/png")
    response = await client.get(local_path(page["url"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox"
    pdf = await upload(actor, PDF, "Flyer 2024.pdf")
    response = await client.get(local_path(pdf["preview_url"]))
    assert response.content == PDF and response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-security-policy"] == "sandbox"


async def test_an_svg_is_downloaded_and_sandboxed(actor: Actor, client: httpx.AsyncClient) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"><script>steal()</script></svg>'
    file = await upload(actor, svg, "logo.svg", content_type="image/svg+xml")
    response = await client.get(local_path(file["url"]))
    assert response.status_code == 200 and response.content == svg
    # Not a raster image: its script would run in our origin if shown, so it is downloaded, and sandboxed.
    assert not response.headers["content-type"].startswith("image/svg"), response.headers["content-type"]
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-security-policy"] == "sandbox"


async def test_an_expired_link_is_refused(actor: Actor, app: FastAPI, client: httpx.AsyncClient) -> None:
    file = await upload(actor, PDF, "a.pdf")
    expired = int(time.time()) - 1
    signature = link_signature(app.state.secret_box, file["path"], expired)
    response = await client.get(f"/files/{file['path']}", params={"Expires": expired, "Signature": signature})
    assert response.status_code == 403
    assert response.json()["message"].startswith("Signature:")


@pytest.mark.parametrize("change", ["signature", "expires", "path", "missing"])
async def test_a_tampered_link_is_refused(actor: Actor, client: httpx.AsyncClient, change: str) -> None:
    file = await upload(actor, PDF, "a.pdf")
    other = await upload(actor, PNG, "b.png")
    url = httpx.URL(file["url"])
    path, params = url.path, dict(url.params)
    if change == "signature":
        params["Signature"] = ("A" if params["Signature"][0] != "A" else "B") + params["Signature"][1:]
    elif change == "expires":
        params["Expires"] = str(int(params["Expires"]) + 3600)
    elif change == "path":
        path = f"/files/{other['path']}"  # another file's path under this file's signature
    else:
        del params["Signature"]
    response = await client.get(path, params=params)
    assert response.status_code == 403, response.text


async def test_a_deleted_or_lost_file_is_gone(
    actor: Actor, client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    deleted = await upload(actor, PDF, "a.pdf")
    await session.execute(text("UPDATE files SET deleted_at = now() WHERE id = :id"), {"id": deleted["id"]})
    await session.commit()
    assert (await client.get(local_path(deleted["url"]))).status_code == 404
    lost = await upload(actor, PDF, "b.pdf")
    (settings.data_dir / "files" / lost["path"]).unlink()
    assert (await client.get(local_path(lost["url"]))).status_code == 404


def test_the_signature_is_kept_out_of_access_logs() -> None:
    assert redact_path("/files/u/f.pdf?Expires=1&Signature=secret") == "/files/<redacted>"


async def test_a_campaign_of_another_brand_cannot_attach_the_file(world: World, actor: Actor) -> None:
    file = await upload(actor, PDF, "a.pdf")
    second = actor.data(await actor.post("/brands", {"name": "Second office"}))["id"]
    attachments = [{"file": file["id"]}]
    to = [{"recipient_type": "Email", "email": "jane@example.com"}]
    body = {"subject": "x", "html": "<p>x</p>", "to": to, "attachments": attachments}
    refused = await actor.post("/emails", body, headers={"X-Rechat-Brand": second})
    assert refused.status_code == 404, refused.text
    assert refused.json()["message"].startswith("attachments.0.file:")
    outsider = await world.brand_admin()
    refused = await outsider.post("/emails", body)
    assert refused.status_code == 404
    # Another member of the file's brand may attach it.
    colleague = await world.member(actor)
    accepted = await colleague.post("/emails", body)
    assert accepted.status_code == 200, accepted.text


async def test_a_campaign_sends_an_uploaded_file_and_a_link(
    actor: Actor, app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"files.example.test": ["127.0.0.1"]})
    file = await upload(actor, PDF, "Flyer.pdf", origin="mailgun")
    logo = b"\x89PNG\r\n\x1a\n" + b"remote logo" * 100
    with file_server({"/logo.png": logo}, content_type="image/png") as files, smtp_server() as server:
        made = await schedule(
            actor,
            to=[{"recipient_type": "Email", "email": "jane@example.com"}],
            attachments=[
                {"file": file["id"]},
                {"url": files.url("files.example.test", "/logo.png"), "name": "Logo.png"},
            ],
        )
        async with running_worker(settings, transport="smtp", smtp_url=server.url, allow_private_attachment_links=True):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["failed_at"] is None, state["failure"]
    (received,) = server.messages
    parts = {part.get_filename(): part for part in received.message.walk() if part.get_filename()}
    assert parts["Flyer.pdf"].get_content() == PDF
    assert parts["Flyer.pdf"].get_content_type() == "application/pdf"
    assert parts["Logo.png"].get_content() == logo
