"""A large attachment costs memory once per campaign, not once per recipient, and arrives intact."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from mailroom.files.storage import LocalStorage
from mailroom.sending import attachments
from mailroom.transports.base import OutgoingMessage, SendResult
from mailroom.transports.mime import Attachment, build_segments, encode_part
from mailroom.transports.outbox import OutboxTransport
from mailroom.transports.smtp import SmtpTransport
from tests.support.campaigns import schedule
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.smtp_sink import smtp_sink
from tests.support.world import Actor, World


def brochure(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


async def uploaded(app: FastAPI, settings: Settings, admin: Actor, data: bytes) -> uuid.UUID:
    LocalStorage(settings.data_dir / "files").write(f"{admin.user}/brochure.pdf", data)
    async with app.state.sessionmaker() as s, s.begin():
        return (
            await s.execute(
                text("INSERT INTO files (created_by, path, name, mime, size) "
                     "VALUES (:u, :p, 'brochure.pdf', 'application/pdf', :n) RETURNING id"),
                {"u": admin.user, "p": f"{admin.user}/brochure.pdf", "n": len(data)},
            )
        ).scalar_one()  # fmt: skip


async def test_every_message_of_an_individual_campaign_carries_the_attachment_intact(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    data = brochure(3 * 1024 * 1024)
    file_id = await uploaded(app, settings, admin, data)
    people = [f"buyer{i}@example.com" for i in range(8)]
    with smtp_server() as server:
        made = await schedule(
            admin,
            "/emails/individual",
            subject="Brochure for {{recipient.email}}",
            to=[{"recipient_type": "Email", "email": address} for address in people],
            attachments=[{"file": str(file_id)}],
        )
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"], within=60)
    assert state["failed_at"] is None, state["failure"]
    assert sorted(r for m in server.messages for r in m.rcpt_tos) == people
    for received in server.messages:
        (address,) = received.rcpt_tos
        assert received.message["Subject"] == f"Brochure for {address}"
        attachments = [p for p in received.message.walk() if p.get_content_disposition() == "attachment"]
        assert [(p.get_filename(), p.get_content()) for p in attachments] == [("brochure.pdf", data)]


async def test_sending_a_chunk_holds_the_attachment_once_not_once_per_recipient(
    world: World, app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One chunk (100 messages) with a 1 MB attachment, through a real worker to an SMTP server.

    Held once per message, as before, a chunk held 100 copies of the 1.37 MB encoded part; shared,
    the part is encoded once and every message handed to the transport refers to that one object.
    Counted here; the memory it saves is what bench/attachments.py prints.
    """
    admin = await world.brand_admin()
    size = 1024 * 1024
    file_id = await uploaded(app, settings, admin, brochure(size))
    encoded: list[bytes] = []

    def encoding(item: Attachment, *, inline: bool) -> bytes:
        encoded.append(encode_part(item, inline=inline))
        return encoded[-1]

    handed: list[OutgoingMessage] = []
    send_many = SmtpTransport.send_many

    async def recording(transport: SmtpTransport, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        handed.extend(messages)
        return await send_many(transport, messages)

    monkeypatch.setattr(attachments, "encode_part", encoding)
    monkeypatch.setattr(SmtpTransport, "send_many", recording)
    with smtp_sink() as sink:
        made = await schedule(
            admin,
            "/emails/individual",
            to=[{"recipient_type": "Email", "email": f"buyer{i}@example.com"} for i in range(100)],
            attachments=[{"file": str(file_id)}],
        )
        async with running_worker(settings, transport="smtp", smtp_url=sink.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"], within=120)
    assert state["failed_at"] is None, state["failure"]
    assert sink.messages == 100 and sink.bytes > 100 * size
    (part,) = encoded
    assert len(handed) == 100
    # Each message refers to the one encoded part: no copy of it made per recipient.
    assert all(sum(segment is part for segment in message.segments) == 1 for message in handed)


def _segmented(part: bytes, n: int) -> OutgoingMessage:
    segments = build_segments(
        from_addr="bob@example.com",
        to=[f"user{n}@example.com"],
        cc=[],
        subject="Plans",
        text=".leading dot\n.\nmore\n",
        html=None,
        message_id=f"<row-{n}@mail.example.com>",
        date=1_700_000_000.0,
        headers={},
        inline=[],
        attachments=[part],
    )
    return OutgoingMessage(f"row-{n}", "bob@example.com", [f"user{n}@example.com"], segments)


async def test_messages_share_the_encoded_part_and_transports_write_it_whole(tmp_path: Path) -> None:
    data = brochure(200_000, seed=3)
    part = encode_part(Attachment("plans.pdf", "application/pdf", data), inline=False)
    first, second = _segmented(part, 1), _segmented(part, 2)
    shared = [s for s in first.segments if len(s) > 100_000]
    assert len(shared) == 1 and any(s is shared[0] for s in second.segments)

    with smtp_server() as server:
        transport = SmtpTransport(server.url)
        results = await transport.send_many([first, second])
        await transport.aclose()
    assert all(r.accepted for r in results)
    arrived = sorted(server.messages, key=lambda m: m.rcpt_tos)
    for received, sent in zip(arrived, (first, second), strict=True):
        assert received.raw.replace(b"\r\n", b"\n") == sent.joined().replace(b"\r\n", b"\n")
        body = received.message.get_body(("plain",))
        assert body is not None and body.get_content().replace("\r\n", "\n") == ".leading dot\n.\nmore\n"
        (attachment,) = received.message.iter_attachments()
        assert attachment.get_content() == data

    outbox = OutboxTransport(tmp_path)
    await outbox.send_many([first])
    assert outbox.path_for("row-1").read_bytes().endswith(first.joined())


@pytest.mark.parametrize(
    "segments",
    [
        (b"Subject: x\r\n\r\nline\r\n", b".dot at a line start\r\n"),
        (b"Subject: x\r\n\r\nhalf a line, ", b".continued\r\n"),
        (b"Subject: x\r\n\r\nno final line break",),
        (b"Subject: x\r\n\r\n", b"", b".\r\n"),
    ],
    ids=["dot-after-line-break", "dot-mid-line", "no-final-crlf", "lone-dot-line"],
)
async def test_dot_lines_are_escaped_across_segment_boundaries(segments: tuple[bytes, ...]) -> None:
    message = OutgoingMessage("row-1", "bob@example.com", ["ann@example.com"], segments)
    with smtp_server() as server:
        transport = SmtpTransport(server.url)
        (result,) = await transport.send_many([message])
        await transport.aclose()
    assert result.accepted
    expected = message.joined()
    expected = expected if expected.endswith(b"\r\n") else expected + b"\r\n"
    assert server.messages[0].raw.replace(b"\r\n", b"\n") == expected.replace(b"\r\n", b"\n")
