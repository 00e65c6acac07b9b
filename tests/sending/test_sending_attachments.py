"""Attachments reach the recipient: uploaded files from storage, links fetched by the server, inline by cid."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from mailroom.files.storage import LocalStorage
from tests.sending.test_sending_pipeline import schedule
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World

PDF = b"%PDF-1.4 flyer " + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"logo" * 500


@contextmanager
def file_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/flyer.pdf":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/pdf")
            self.send_header("Content-Length", str(len(PDF)))
            self.end_headers()
            self.wfile.write(PDF)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


async def test_file_link_and_inline_parts_arrive(world: World, app: FastAPI, settings: Settings) -> None:
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
    with file_server() as base, smtp_server() as server:
        made = await schedule(
            admin,
            to=[{"recipient_type": "Email", "email": "jane@example.com"}],
            html='<p><img src="cid:logo"> Open house</p>',
            attachments=[
                {"file": str(file_id), "is_inline": True, "content_id": "logo"},
                {"url": f"{base}/flyer.pdf", "name": "Flyer.pdf"},
                {"url": f"{base}/flyer.pdf", "name": "Flyer again.pdf"},  # the same link: dropped
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


async def test_links_to_private_addresses_are_not_fetched(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    with file_server() as base, smtp_server() as server:
        made = await schedule(
            admin,
            to=[{"recipient_type": "Email", "email": "jane@example.com"}],
            attachments=[{"url": f"{base}/flyer.pdf", "name": "Flyer.pdf"}],
        )
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert server.messages == []
    assert "private address" in state["failure"]
