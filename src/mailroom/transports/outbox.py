"""A transport that writes each message to a folder instead of sending it.

The zero-setup default: a person opens ``<key>.eml`` in a mail client to see exactly what
would have gone out. Each file is written under a temporary name and renamed, so a reader
never sees half a message. ``Return-Path`` and ``X-Envelope-To`` are prepended to show the
envelope, Bcc recipients included, since the message headers never list them.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

from mailroom.transports.base import (
    Capabilities,
    OutgoingMessage,
    SendError,
    SendResult,
    TransientSendError,
    settle,
)

_SAFE_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}\Z")
_CRLF = re.compile(r"[\r\n]+")


class OutboxTransport:
    name = "outbox"
    # Messages per call, as for SMTP.
    capabilities = Capabilities(max_recipients_per_call=100)

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"OutboxTransport({str(self.directory)!r})"

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        # One thread hop for the whole call: file writes are quick, thread switches are not free.
        outcomes = await asyncio.to_thread(self._write_all, messages)
        return settle(messages, outcomes)

    async def aclose(self) -> None:
        return None

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.eml"

    def _write_all(self, messages: Sequence[OutgoingMessage]) -> list[SendResult | SendError]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = TransientSendError(f"cannot create the outbox {self.directory}: {exc.strerror or exc}")
            return [error] * len(messages)
        return [self._write(msg) for msg in messages]

    def _write(self, msg: OutgoingMessage) -> SendResult:
        if not _SAFE_KEY.match(msg.key):
            return SendResult(msg.key, None, f"cannot use {msg.key!r} as a file name", True)
        envelope = (
            f"Return-Path: <{_CRLF.sub(' ', msg.envelope_from)}>\r\n"
            f"X-Envelope-To: {_CRLF.sub(' ', ', '.join(msg.recipients))}\r\n"
        ).encode()
        target = self.path_for(msg.key)
        temp = self.directory / f".{msg.key}.{uuid.uuid4().hex}.tmp"
        try:
            with open(temp, "wb") as fh:
                fh.write(envelope)
                for segment in msg.segments:
                    fh.write(segment)
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            return SendResult(msg.key, None, f"cannot write {target}: {exc.strerror or exc}", False)
        return SendResult(msg.key, f"outbox:{msg.key}")
