"""Attachments reach the recipient: uploaded files from storage, links fetched by the server, inline by cid."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from mailroom.files.storage import LocalStorage
from tests.support.campaigns import schedule
from tests.support.links import fake_dns, file_server
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World

PDF = b"%PDF-1.4 flyer " + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"logo" * 500


async def test_file_link_and_inline_parts_arrive(
    world: World, app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"files.example.test": ["127.0.0.1"]})
    admin = await world.brand_admin()
    LocalStorage(settings.data_dir / "files").write(f"{admin.user}/logo.png", PNG)
    async with app.state.sessionmaker() as s, s.begin():
        file_id = (
            await s.execute(
                text("INSERT INTO files (created_by, path, name, mime, size) "
                     "VALUES (:u, :p, 'logo.png', 'image/png', :n) RETURNING id"),
                {"u": admin.user, "p": f"{admin.user}/logo.png", "n": len(PNG)},
            )
        ).scalar_one()  # fmt: skip
    with file_server({"/flyer.pdf": PDF}) as files, smtp_server() as server:
        link = files.url("files.example.test", "/flyer.pdf")
        made = await schedule(
            admin,
            to=[{"recipient_type": "Email", "email": "jane@example.com"}],
            html='<p><img src="cid:logo"> Open house</p>',
            attachments=[
                {"file": str(file_id), "is_inline": True, "content_id": "logo"},
                {"url": link, "name": "Flyer.pdf"},
                {"url": link, "name": "Flyer again.pdf"},  # the same link: dropped
            ],
        )
        async with running_worker(settings, transport="smtp", smtp_url=server.url, allow_private_attachment_links=True):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["failed_at"] is None, state["failure"]
    (received,) = server.messages
    parts = {part.get_filename() or part.get_content_type(): part for part in received.message.walk()}
    assert parts["Flyer.pdf"].get_content() == PDF
    assert parts["Flyer.pdf"].get_content_disposition() == "attachment"
    assert parts["logo.png"].get_content() == PNG and parts["logo.png"]["Content-ID"] == "<logo>"
    assert parts["logo.png"].get_content_disposition() == "inline"
    assert "Flyer again.pdf" not in parts


async def test_links_to_private_addresses_are_not_fetched(
    world: World, app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name is only judged when the worker resolves it: here, to an intranet file server.
    fake_dns(monkeypatch, {"files.intranet.test": ["127.0.0.1"]})
    admin = await world.brand_admin()
    with file_server({"/flyer.pdf": PDF}) as files, smtp_server() as server:
        made = await schedule(
            admin,
            to=[{"recipient_type": "Email", "email": "jane@example.com"}],
            attachments=[{"url": files.url("files.intranet.test", "/flyer.pdf"), "name": "Flyer.pdf"}],
        )
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert server.messages == [] and files.requests == []
    assert "private address" in state["failure"]
