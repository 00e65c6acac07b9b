"""A real SMTP server (aiosmtpd) on a free loopback port that records what it receives.

    with smtp_server() as server:
        transport = SmtpTransport(server.url)
        ...
        assert server.messages[0].rcpt_tos == ["ann@example.com"]

It can refuse chosen recipients (``refuse``) and answer the next N MAIL or DATA commands
with an error (``fail_next``); a 421 reply also closes the connection, as real servers do.
Each message keeps the name its client gave in EHLO and when it arrived, so a test can tell which of
several clients (``url_for``) sent what, and when.
The server runs in its own thread and event loop, so sync and async tests can both use it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class ReceivedMessage:
    envelope_from: str
    rcpt_tos: list[str]
    message: EmailMessage  # parsed with the stdlib default policy
    raw: bytes
    helo: str  # the client's EHLO/HELO name
    at: float  # time.monotonic() when the server accepted it (same clock as the test's)


class RecordingHandler:
    def __init__(self, *, pipelining: bool = True) -> None:
        # Real relays (Postfix, Exim, ESPs) offer PIPELINING; the sequential path is tested with it off.
        self.pipelining = pipelining
        self.messages: list[ReceivedMessage] = []
        self.connections = 0
        self.ehlo_count = 0
        self.quit_count = 0
        self.sessions: list[SMTP] = []
        self.rcpt_replies: dict[str, str] = {}
        self.mail_replies: deque[str] = deque()
        self.data_replies: deque[str] = deque()

    @staticmethod
    def _answer(server: SMTP, reply: str) -> str:
        if reply.startswith("421"):
            # Close once the reply has been written, like a server shutting down.
            asyncio.get_running_loop().call_soon(server.transport.close)  # type: ignore[union-attr]
        return reply

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.ehlo_count += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quit_count += 1
        return "221 Bye"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_replies:
            return self._answer(server, self.mail_replies.popleft())
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return self._answer(server, reply)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self._answer(server, self.data_replies.popleft())
        raw = cast(bytes, envelope.original_content)
        parsed = cast(EmailMessage, BytesParser(policy=default_policy).parsebytes(raw))
        self.messages.append(
            ReceivedMessage(
                str(envelope.mail_from), list(envelope.rcpt_tos), parsed, raw, str(session.host_name), time.monotonic()
            )
        )
        return f"250 2.0.0 Ok: queued as Q{len(self.messages):05d}"


class _Controller(Controller):
    def factory(self) -> SMTP:
        handler = cast(RecordingHandler, self.handler)

        class CountingSMTP(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if self.transport is None:  # not the STARTTLS re-entry
                    handler.connections += 1
                    handler.sessions.append(self)
                super().connection_made(transport)

        with warnings.catch_warnings():
            # Tests may require AUTH without TLS on loopback; aiosmtpd warns about that.
            warnings.simplefilter("ignore", UserWarning)
            return CountingSMTP(self.handler, **self.SMTP_kwargs)

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _create_server(self) -> Any:
        # Port 0: the OS picks a free port, read back before the controller connects to it.
        return self._bind()


class FakeSmtpServer:
    def __init__(self, handler: RecordingHandler, controller: _Controller, auth: tuple[str, str] | None) -> None:
        self.handler = handler
        self._controller = controller
        self.host = "127.0.0.1"
        self.port = controller.port
        self.auth = auth

    @property
    def url(self) -> str:
        return self.url_for("client.test")

    def url_for(self, helo: str) -> str:
        """The server's URL for a client that names itself ``helo`` (see ReceivedMessage.helo)."""
        if not self.auth:
            return f"smtp://{self.host}:{self.port}?helo={helo}"
        # This stand-in speaks no TLS: logging in to it in clear has to be asked for.
        return f"smtp://{self.auth[0]}:{self.auth[1]}@{self.host}:{self.port}?helo={helo}&starttls=0"

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.handler.messages

    @property
    def connections(self) -> int:
        return self.handler.connections

    @property
    def ehlo_count(self) -> int:
        return self.handler.ehlo_count

    def refuse(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        """Answer RCPT TO for ``address`` with ``reply`` (e.g. "451 4.2.1 Try later")."""
        self.handler.rcpt_replies[address.lower()] = reply

    def fail_next(self, count: int, reply: str, *, stage: Literal["mail", "data"] = "data") -> None:
        """Answer the next ``count`` MAIL FROM or DATA commands with ``reply``."""
        replies = self.handler.data_replies if stage == "data" else self.handler.mail_replies
        replies.extend([reply] * count)

    @property
    def quit_count(self) -> int:
        return self.handler.quit_count

    def drop_connections(self) -> None:
        """Close every client connection from the server side, as an idle timeout would."""
        done = threading.Event()

        def close_all() -> None:
            for session in self.handler.sessions:
                if session.transport is not None:
                    session.transport.close()
            done.set()

        self._controller.loop.call_soon_threadsafe(close_all)
        done.wait(5)

    def reset(self) -> None:
        h = self.handler
        h.messages.clear()
        h.rcpt_replies.clear()
        h.mail_replies.clear()
        h.data_replies.clear()
        h.sessions.clear()
        h.connections = h.ehlo_count = h.quit_count = 0


@contextmanager
def smtp_server(*, auth: tuple[str, str] | None = None, pipelining: bool = True) -> Iterator[FakeSmtpServer]:
    """Run a recording SMTP server for the duration of the block; ``auth`` requires that login."""
    handler = RecordingHandler(pipelining=pipelining)
    kwargs: dict[str, Any] = {}
    if auth is not None:

        def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == auth
            return AuthResult(success=ok, handled=False)

        kwargs = {"authenticator": authenticator, "auth_require_tls": False, "auth_required": True}
    controller = _Controller(handler, hostname="127.0.0.1", port=0, **kwargs)
    controller.start()
    # The controller's readiness probe connects once; it is not a client, so forget it.
    deadline = time.monotonic() + 2
    while handler.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    handler.connections = 0
    handler.sessions.clear()
    try:
        yield FakeSmtpServer(handler, controller, auth)
    finally:
        controller.stop()
