from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import cast

import pytest

from mailroom.transports.base import OutgoingMessage, TransientSendError, Transport, send_one
from mailroom.transports.mime import build_message, make_message_id
from mailroom.transports.outbox import OutboxTransport


def raw_message(n: int) -> bytes:
    return build_message(
        from_addr="Bob Ray <bob@example.com>",
        to=[f"User {n} <user{n}@example.com>"],
        cc=["cc@example.com"],
        subject=f"Hello {n}",
        text=f"Hi {n}\n",
        html=None,
        message_id=make_message_id(f"row-{n}", "example.com"),
        date=0.0,
        headers={},
        inline=[],
        attachments=[],
    )


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def read(path: Path) -> EmailMessage:
    return cast(EmailMessage, BytesParser(policy=default_policy).parsebytes(path.read_bytes()))


async def test_writes_one_eml_per_message(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")
    assert isinstance(outbox, Transport)
    bounces, hidden = "bounces@example.com", "hidden@example.com"
    messages = [OutgoingMessage(f"row-{n}", bounces, (f"u{n}@example.com", hidden), raw_message(n)) for n in range(3)]
    results = await outbox.send_many(messages)
    assert [(r.key, r.provider_id, r.error) for r in results] == [
        (f"row-{n}", f"outbox:row-{n}", None) for n in range(3)
    ]
    assert files(tmp_path / "outbox") == ["row-0.eml", "row-1.eml", "row-2.eml"]
    saved = read(outbox.path_for("row-1"))
    assert saved["Return-Path"] == "<bounces@example.com>"
    assert saved["X-Envelope-To"] == "u1@example.com, hidden@example.com"
    assert saved["Subject"] == "Hello 1"
    assert saved["To"] == "User 1 <user1@example.com>"
    assert saved.get_content() == "Hi 1\r\n"
    assert outbox.path_for("row-1").read_bytes().endswith(raw_message(1)[-40:])


async def test_rewriting_a_key_replaces_the_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    await outbox.send_many([OutgoingMessage("k", "a@example.com", ("b@example.com",), raw_message(1))])
    await outbox.send_many([OutgoingMessage("k", "a@example.com", ("b@example.com",), raw_message(2))])
    assert files(tmp_path) == ["k.eml"]
    assert read(tmp_path / "k.eml")["Subject"] == "Hello 2"


async def test_unsafe_keys_are_refused(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    bad, good = await outbox.send_many(
        [
            OutgoingMessage("../escape", "a@example.com", ("b@example.com",), raw_message(1)),
            OutgoingMessage("fine", "a@example.com", ("b@example.com",), raw_message(2)),
        ]
    )
    assert (bad.provider_id, bad.permanent) == (None, True)
    assert good.provider_id == "outbox:fine"
    assert files(tmp_path) == ["fine.eml"]


async def test_send_without_a_key_names_the_file(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    result = await send_one(outbox, OutgoingMessage("k4", "a@example.com", ["b@example.com"], raw_message(4)))
    assert result.provider_id == f"outbox:{result.key}"
    assert read(outbox.path_for(result.key))["Subject"] == "Hello 4"


async def test_an_unusable_folder_is_a_transient_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    outbox = OutboxTransport(blocker / "outbox")
    with pytest.raises(TransientSendError, match="cannot create the outbox"):
        await outbox.send_many([OutgoingMessage("k", "a@example.com", ("b@example.com",), raw_message(1))])
