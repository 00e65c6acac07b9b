"""SMTP transactions on an open connection, pipelined (RFC 2920) when the server allows it.

aiosmtplib opens connections (TCP, EHLO, STARTTLS, AUTH: rare and fiddly), then this protocol takes
the connection over for the transactions: MAIL, every RCPT and DATA go out in one write and their
replies come back together, so a message costs two round trips instead of three or more, and replies
are parsed from one buffer without a future per command. That is most of the per-message CPU of a
campaign sent over SMTP.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

# The body goes to the transport in pieces of this size, each once the previous ones have drained.
_WRITE_PIECE = 256 * 1024


class ConnectionGone(ConnectionError):
    """The server closed the connection (or it broke) before all replies came."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class Wire(asyncio.Protocol):
    """Collects complete replies from the byte stream; ``read(n)`` waits for the next n of them."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._buffer = bytearray()
        self._replies: deque[Reply] = deque()
        self._lines: list[str] = []
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self._writable: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        self.lost: Exception | None = None
        # Once the body is on its way a broken connection may have delivered it: never resend blindly.
        self.body_started = False

    @property
    def alive(self) -> bool:
        return self.lost is None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end]).rstrip(b"\r").decode("utf-8", "replace")
            start = end + 1
            self._lines.append(line[4:])
            if line[3:4] != "-":  # the last line of a reply
                try:
                    code = int(line[:3])
                except ValueError:
                    code = 500
                self._replies.append(Reply(code, "\n".join(self._lines).strip()))
                self._lines = []
        del self._buffer[:start]
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionGone("the server closed the connection")
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport has sent enough of what it holds to take more."""
        if self._writable is not None:
            await self._writable
        if self.lost is not None:
            raise ConnectionGone(str(self.lost))

    def eof_received(self) -> bool:
        return False

    def _wake(self) -> None:
        waiting = self._waiter is not None and not self._waiter.done()
        if waiting and (len(self._replies) >= self._wanted or self.lost is not None):
            self._waiter.set_result(None)  # type: ignore[union-attr]

    def write(self, data: bytes | memoryview) -> None:
        if not self.alive:
            raise ConnectionGone("the connection is closed")
        self.transport.write(data)  # type: ignore[attr-defined]

    async def read(self, count: int) -> list[Reply]:
        while len(self._replies) < count:
            if self.lost is not None:
                raise ConnectionGone(str(self.lost))
            self._wanted = count
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return [self._replies.popleft() for _ in range(count)]

    def close(self) -> None:
        self.transport.close()


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a transaction got to: the failing reply (if any) and the refused recipients."""

    accepted: bool
    stage: str
    reply: Reply | None
    refused: dict[str, Reply]


def _command(verb: bytes, address: str, options: list[str], encoding: str) -> bytes:
    if "\r" in address or "\n" in address or ">" in address:
        raise ValueError(f"{address!r} cannot be put in an SMTP command")
    tail = (" " + " ".join(options)).encode() if options else b""
    return verb + b"<" + address.encode(encoding) + b">" + tail + b"\r\n"


async def transact(
    wire: Wire,
    *,
    sender: str,
    recipients: list[str],
    message: bytes | Sequence[bytes],
    options: list[str],
    pipelining: bool,
) -> Outcome:
    """One message: MAIL, RCPT..., DATA, body. Leaves the connection ready for the next one."""
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    mail = _command(b"MAIL FROM:", sender, options, encoding)
    rcpts = [_command(b"RCPT TO:", r, [], encoding) for r in recipients]
    refused: dict[str, Reply] = {}
    if pipelining:
        wire.write(mail + b"".join(rcpts) + b"DATA\r\n")
        replies = await wire.read(len(rcpts) + 2)
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        refused = {r: reply for r, reply in zip(recipients, rcpt_replies, strict=True) if not reply.ok}
        if data_reply.code == 354 and (not mail_reply.ok or len(refused) == len(recipients)):
            # The server opened DATA although the envelope failed: end it empty, then discard it.
            wire.write(b".\r\n")
            await wire.read(1)
    else:
        wire.write(mail)
        (mail_reply,) = await wire.read(1)
        data_reply = None
        if mail_reply.ok:
            for address, command in zip(recipients, rcpts, strict=True):
                wire.write(command)
                (reply,) = await wire.read(1)
                if not reply.ok:
                    refused[address] = reply
                    if reply.code == 421:
                        break
            if len(refused) < len(recipients):
                wire.write(b"DATA\r\n")
                (data_reply,) = await wire.read(1)
    if not mail_reply.ok:
        return await _abandon(wire, Outcome(False, "MAIL FROM", mail_reply, refused))
    closing = next((r for r in refused.values() if r.code == 421), None)
    if closing is not None:
        return Outcome(False, "RCPT TO", closing, refused)
    if len(refused) == len(recipients):
        return await _abandon(wire, Outcome(False, "RCPT TO", None, refused))
    if data_reply is None or data_reply.code != 354:
        return await _abandon(wire, Outcome(False, "DATA", data_reply, refused))
    wire.body_started = True
    await _write_body(wire, [message] if isinstance(message, bytes) else message)
    (final,) = await wire.read(1)
    wire.body_started = False
    if final.code != 250:
        return await _abandon(wire, Outcome(False, "DATA", final, refused))
    return Outcome(True, "DATA", final, refused)


async def _write_body(wire: Wire, segments: Sequence[bytes]) -> None:
    """The message dot-stuffed (RFC 5321 4.5.2) and terminated, written segment by segment.

    A segment with no line starting with a dot (any base64 part) goes out as views of the object
    given, a piece at a time as the connection takes it: a part shared by many messages is never
    copied whole, neither for one message nor into the transport's send buffer.
    """
    line_start, ended = True, False
    for segment in segments:
        if not segment:
            continue
        # Searched before replacing: most segments have no dot line, and are then not copied.
        stuffed = segment.replace(b"\n.", b"\n..") if b"\n." in segment else segment
        if line_start and segment[:1] == b".":
            stuffed = b"." + stuffed
        view = memoryview(stuffed)
        for start in range(0, len(view), _WRITE_PIECE):
            wire.write(view[start : start + _WRITE_PIECE])
            await wire.drain()
        line_start, ended = segment.endswith(b"\n"), segment.endswith(b"\r\n")
    wire.write(b".\r\n" if ended else b"\r\n.\r\n")


async def _abandon(wire: Wire, outcome: Outcome) -> Outcome:
    """Clear the half-built envelope so the connection can carry the next message."""
    if outcome.reply is not None and outcome.reply.code == 421:
        wire.close()
        return outcome
    if wire.alive:
        wire.write(b"RSET\r\n")
        (reply,) = await wire.read(1)
        if not reply.ok:
            wire.close()
    return outcome


async def quit_politely(wire: Wire) -> None:
    if wire.alive:
        wire.write(b"QUIT\r\n")
        await wire.read(1)
    wire.close()
