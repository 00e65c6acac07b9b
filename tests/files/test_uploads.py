"""Uploads: real multipart bodies through the API, checked against what storage and the table hold."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.transports.base import ESP_SIZE_LIMIT, MAILBOX_SIZE_LIMIT
from tests.support.uploads import PDF, PNG, file_rows, post_upload, stored_files, upload
from tests.support.world import Actor, World

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
DOCX_HEAD = b"PK\x03\x04\x14\x00\x06\x00" + b"[Content_Types].xml" + bytes(200)


@pytest.fixture
async def actor(world: World) -> Actor:
    return await world.brand_admin()


async def test_upload_answers_the_file_object_and_stores_it(
    actor: Actor, settings: Settings, session: AsyncSession
) -> None:
    file = await upload(actor, PNG, "logo.png", origin="gmail")
    assert set(file) == {
        "id", "created_at", "updated_at", "deleted_at", "created_by", "path", "name", "public", "type", "url",
        "preview_url", "mime",
    }  # fmt: skip
    user, _, stored = file["path"].partition("/")
    assert user == str(actor.user) and stored.endswith(".png")
    uuid.UUID(stored.removesuffix(".png"))
    assert (file["name"], file["mime"], file["public"], file["type"]) == ("logo.png", "image/png", False, "file")
    assert file["created_by"] == str(actor.user) and file["deleted_at"] is None
    assert file["url"].startswith(f"http://mailroom.test/files/{file['path']}?Expires=")
    assert "Signature=" in file["url"]
    assert (settings.data_dir / "files" / file["path"]).read_bytes() == PNG
    assert stored_files(settings, actor.user) == [file["path"]]
    (row,) = await file_rows(session)
    assert (row["brand"], row["size"], row["mime"], str(row["id"])) == (actor.brand, len(PNG), "image/png", file["id"])


@pytest.mark.parametrize(
    ("origin", "limit"),
    [
        ("gmail", MAILBOX_SIZE_LIMIT),
        ("outlook", MAILBOX_SIZE_LIMIT),
        ("mailgun", ESP_SIZE_LIMIT),
        (None, ESP_SIZE_LIMIT),
        ("pigeon", ESP_SIZE_LIMIT),
    ],
)
async def test_file_at_the_limit_is_kept_and_one_byte_over_is_refused(
    actor: Actor, settings: Settings, session: AsyncSession, origin: str | None, limit: int
) -> None:
    at_limit = PDF + b"\0" * (limit - len(PDF))
    over = await post_upload(actor, at_limit + b"\0", "big.pdf", origin=origin)
    assert over.status_code == 413, over.text
    assert "file" in over.json()["message"]
    assert stored_files(settings, actor.user) == [] and await file_rows(session) == []

    file = await upload(actor, at_limit, "big.pdf", origin=origin)
    assert (settings.data_dir / "files" / file["path"]).stat().st_size == limit
    assert stored_files(settings, actor.user) == [file["path"]]


async def test_declared_body_over_the_largest_limit_is_refused_before_reading(actor: Actor) -> None:
    response = await actor.client.post(
        "/emails/attachments?origin=gmail",
        content=b"x",
        headers={**actor.headers, "Content-Type": "multipart/form-data; boundary=b", "Content-Length": "99999999"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("data", "name", "claimed", "mime", "ext"),
    [
        (b"<!DOCTYPE html><script>alert(1)</script>", "photo.png", "image/png", "text/html", "html"),
        (PNG, "notes.txt", "text/plain", "image/png", "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(100), "a.pdf", "application/pdf", "image/jpeg", "jpg"),
        (b"GIF89a" + bytes(50), "x", "text/html", "image/gif", "gif"),
        (b"RIFF\x00\x01\x00\x00WEBPVP8 " + bytes(50), "x.bin", "text/html", "image/webp", "webp"),
        (PDF, "flyer.png", "image/png", "application/pdf", "pdf"),
        (DOCX_HEAD, "offer.docx", "application/pdf", DOCX, "docx"),
        (DOCX_HEAD, "archive.pdf", "application/pdf", "application/zip", "zip"),
        ("Grüße, plain text\n".encode(), "a.html", "text/html", "text/plain", "txt"),
        (b"\x00\x01\x02binary", "a.txt", "text/plain", "application/octet-stream", "bin"),
    ],
)
async def test_the_content_decides_the_type_not_the_client(
    actor: Actor, settings: Settings, data: bytes, name: str, claimed: str, mime: str, ext: str
) -> None:
    file = await upload(actor, data, name, content_type=claimed)
    assert file["mime"] == mime
    assert file["path"].endswith(f".{ext}")
    assert file["name"] == name


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("in\x00vo\x07ice\x1b\x7f.pdf", "invoice.pdf"),
        ("tab\tand  spaces .pdf", "tab and spaces .pdf"),
        ("report\u202egpj.exe", "reportgpj.exe"),
        ("..", "attachment"),
        ("x" * 500 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
async def test_client_names_are_cleaned(actor: Actor, settings: Settings, sent: str, kept: str) -> None:
    # Sent as the bytes a client could put on the wire (httpx would escape control characters).
    response = await post_raw(actor, multipart(("file", sent, PDF)))
    file = actor.data(response)
    assert file["name"] == kept
    assert stored_files(settings, actor.user) == [file["path"]]
    assert file["path"].startswith(f"{actor.user}/")


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "XyZ") -> bytes:
    body = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


async def post_raw(actor: Actor, body: bytes, boundary: str = "XyZ") -> Any:
    return await actor.client.post(
        "/emails/attachments",
        content=body,
        headers={**actor.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("no file part", multipart(("note", None, b"hello"))),
        ("two files", multipart(("file", "a.pdf", PDF), ("file", "b.png", PNG))),
        ("empty file", multipart(("file", "empty.pdf", b""))),
        ("not closed", multipart(("file", "a.pdf", PDF))[: -len(b"--XyZ--\r\n") - 10]),
        ("garbage", b"this is not multipart at all"),
    ],
)
async def test_bad_bodies_are_refused_and_store_nothing(
    actor: Actor, settings: Settings, session: AsyncSession, case: str, body: bytes
) -> None:
    response = await post_raw(actor, body)
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith(("file:", "body:")), message
    assert stored_files(settings, actor.user) == [] and await file_rows(session) == []


async def test_a_form_field_besides_the_file_is_ignored(actor: Actor, settings: Settings) -> None:
    response = await post_raw(actor, multipart(("note", None, b"hello"), ("file", "a.pdf", PDF)))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["mime"] == "application/pdf"


async def test_not_multipart_is_refused(actor: Actor) -> None:
    response = await actor.client.post(
        "/emails/attachments", content=PDF, headers={**actor.headers, "Content-Type": "application/pdf"}
    )
    assert response.status_code == 400 and response.json()["message"].startswith("file:")


async def test_a_body_cut_short_stores_nothing(
    actor: Actor, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    body = multipart(("file", "big.pdf", PDF * 200))
    sent: list[MutableMapping[str, Any]] = []
    pieces = [body[:70_000], body[70_000:140_000]]

    async def receive() -> dict[str, Any]:
        if pieces:
            return {"type": "http.request", "body": pieces.pop(0), "more_body": True}
        return {"type": "http.disconnect"}  # the client went away mid-upload

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"authorization", f"Bearer {actor.token}".encode()),
        (b"x-rechat-brand", str(actor.brand).encode()),
        (b"content-type", b"multipart/form-data; boundary=XyZ"),
        (b"content-length", str(len(body)).encode()),
        (b"host", b"mailroom.test"),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/emails/attachments", "raw_path": b"/emails/attachments", "root_path": "", "query_string": b"",
        "headers": headers, "client": ("127.0.0.1", 5000), "server": ("mailroom.test", 80), "state": {},
    }  # fmt: skip
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert stored_files(settings, actor.user) == [] and await file_rows(session) == []


async def test_uploader_must_be_a_member_of_the_brand(world: World, actor: Actor, settings: Settings) -> None:
    other = await world.brand_admin()
    response = await post_upload(actor, PDF, "a.pdf", brand=other.brand)
    assert response.status_code == 403 and "X-Rechat-Brand" in response.json()["message"]
    assert stored_files(settings, actor.user) == []


async def test_an_empty_brand_header_is_refused_not_ignored(actor: Actor, settings: Settings) -> None:
    # It used to count as absent: the file was stored as the uploader's alone, with no brand.
    response = await actor.client.post(
        "/emails/attachments",
        files={"file": ("a.pdf", PDF, "application/pdf")},
        headers={**actor.headers, "X-Rechat-Brand": ""},
    )
    assert response.status_code == 400 and response.json()["message"].startswith("X-Rechat-Brand:")
    assert stored_files(settings, actor.user) == []


async def test_upload_needs_a_token(client: Any) -> None:
    response = await client.post("/emails/attachments", files={"file": ("a.pdf", PDF, "application/pdf")})
    assert response.status_code == 401


async def test_an_undeclared_body_past_the_upload_limit_is_cut_off(
    actor: Actor, settings: Settings, session: AsyncSession
) -> None:
    # No Content-Length (chunked): the running count stops it, here in a form field besides a small file.
    head = multipart(("file", "a.pdf", PDF))[: -len(b"--XyZ--\r\n")]
    head += b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
    piece = b"n" * (1024 * 1024)

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(MAILBOX_SIZE_LIMIT // len(piece) + 2):
            yield piece
        yield b"\r\n--XyZ--\r\n"

    response = await actor.client.post(
        "/emails/attachments?origin=gmail",
        content=body(),
        headers={**actor.headers, "Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["message"].startswith("body:")
    assert stored_files(settings, actor.user) == [] and await file_rows(session) == []
