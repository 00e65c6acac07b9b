"""SMTP relay over a small pool of reused aiosmtplib connections.

Opening a connection (TCP, EHLO, STARTTLS, AUTH) costs several round trips; a campaign
sends thousands of messages, so connections are opened lazily, kept for the next message
and the next batch, and replaced when the server drops them. At most ``pool_size`` are
open at once, shared by every batch sent through this transport.

The provider id of an accepted message is its own Message-ID (without angle brackets),
which is stable and known before sending; queue ids in 250 replies differ per server and
are often missing.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from mailroom.transports.base import (
    OutgoingMessage,
    PermanentSendError,
    SendError,
    SendResult,
    TransientSendError,
    send_one,
    settle,
)

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<?([^\r\n>]+)>?[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None  # None: upgrade when the server offers STARTTLS
    timeout: float
    validate_certs: bool
    helo: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        """``smtp://user:pass@host:587?starttls=1``, ``smtps://host`` (implicit TLS).

        Query options: ``starttls`` (1/0; absent = opportunistic), ``timeout`` (seconds,
        default 30), ``verify`` (0 to accept self-signed certificates), ``helo`` (the name
        given in EHLO; default the machine's FQDN).
        """
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP URL must look like smtp://user:pass@host:port or smtps://host")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}

        def flag(name: str) -> bool | None:
            value = query.get(name, "").lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
            if value:
                raise ValueError(f"SMTP URL option {name}={value!r} must be 1 or 0")
            return None

        use_tls = parts.scheme == "smtps"
        start_tls = False if use_tls else flag("starttls")
        default_port = 465 if use_tls else 587 if start_tls else 25
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=start_tls,
            timeout=float(query.get("timeout", 30)),
            validate_certs=flag("verify") is not False,
            helo=query.get("helo") or None,
        )


class SmtpTransport:
    """Relays raw MIME to an SMTP server; see ``mailroom.transports.base`` for the contract."""

    name = "smtp"

    def __init__(self, url: str, *, pool_size: int = 4, tls_context: ssl.SSLContext | None = None) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.settings = SmtpSettings.from_url(url)
        self.pool_size = pool_size
        self.connections_opened = 0
        self._tls_context = tls_context
        self._idle: list[SMTP] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._helo = self.settings.helo

    def __repr__(self) -> str:  # never show the password
        s = self.settings
        return f"SmtpTransport({'smtps' if s.use_tls else 'smtp'}://{s.host}:{s.port}, pool_size={self.pool_size})"

    async def send(
        self, *, envelope_from: str, recipients: Sequence[str], message: bytes, key: str | None = None
    ) -> SendResult:
        return await send_one(self, OutgoingMessage(key or "", envelope_from, tuple(recipients), message))

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        outcomes: list[SendResult | SendError | None] = [None] * len(messages)
        pending = iter(range(len(messages)))  # shared by the workers: each index is taken once
        abort: list[SendError] = []
        workers = min(self.pool_size, len(messages))
        await asyncio.gather(*(self._worker(messages, outcomes, pending, abort) for _ in range(workers)))
        return settle(messages, [o for o in outcomes if o is not None])

    async def aclose(self) -> None:
        """Say QUIT on the idle connections; call once no batch is in flight."""
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                await asyncio.wait_for(conn.quit(), timeout=5)
            except (SMTPException, OSError, TimeoutError):
                pass
            finally:
                conn.close()

    async def _worker(
        self,
        messages: Sequence[OutgoingMessage],
        outcomes: list[SendResult | SendError | None],
        pending: Iterator[int],
        abort: list[SendError],
    ) -> None:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            finished = False
            try:
                for index in pending:
                    if abort:
                        outcomes[index] = abort[0]
                        continue
                    conn, outcome = await self._deliver(conn, messages[index])
                    if isinstance(outcome, SendError):
                        abort.append(outcome)  # the server is unusable: stop the whole batch
                    outcomes[index] = outcome
                finished = True
            finally:
                # A connection interrupted mid-transaction (cancellation) is in an unknown state.
                if conn is not None and finished and conn.is_connected:
                    self._idle.append(conn)
                elif conn is not None:
                    conn.close()

    async def _connect(self) -> SMTP:
        s = self.settings
        if self._helo is None:
            self._helo = await asyncio.to_thread(socket.getfqdn)
        conn = SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password,
            use_tls=s.use_tls,
            start_tls=s.start_tls,
            timeout=s.timeout,
            validate_certs=s.validate_certs,
            tls_context=self._tls_context,
            local_hostname=self._helo,
        )
        where = f"{s.host}:{s.port}"
        try:
            await conn.connect()
        except SMTPAuthenticationError as exc:
            raise PermanentSendError(f"SMTP server {where} refused the credentials: {exc.code} {exc.message}") from exc
        except SMTPNotSupported as exc:
            raise PermanentSendError(f"SMTP server {where}: {exc.message}") from exc
        except SMTPResponseException as exc:
            error = PermanentSendError if 500 <= exc.code < 600 else TransientSendError
            raise error(f"SMTP server {where} refused the connection: {exc.code} {exc.message}") from exc
        except (SMTPException, OSError, TimeoutError) as exc:
            raise TransientSendError(f"cannot connect to SMTP server {where}: {exc}") from exc
        self.connections_opened += 1
        return conn

    async def _deliver(self, conn: SMTP | None, msg: OutgoingMessage) -> tuple[SMTP | None, SendResult | SendError]:
        """One transaction; returns the connection to use next (None when it is gone)."""
        for attempt in range(2):
            reused = conn is not None and conn.is_connected
            if not reused:
                if conn is not None:
                    conn.close()
                try:
                    conn = await self._connect()
                except SendError as exc:
                    return None, exc
            assert conn is not None
            stage = "MAIL FROM"
            try:
                ascii_envelope = msg.envelope_from.isascii() and all(r.isascii() for r in msg.recipients)
                options = [] if ascii_envelope else ["SMTPUTF8"]
                if not msg.message.isascii() and conn.supports_extension("8bitmime"):
                    options.append("BODY=8BITMIME")
                encoding = "ascii" if ascii_envelope else "utf-8"
                await conn.mail(msg.envelope_from, options=options, encoding=encoding)
                stage = "RCPT TO"
                refused: dict[str, SMTPRecipientRefused] = {}
                for rcpt in msg.recipients:
                    try:
                        await conn.rcpt(rcpt, encoding=encoding)
                    except SMTPRecipientRefused as exc:
                        if exc.code == 421:
                            raise
                        refused[rcpt] = exc
                if len(refused) == len(msg.recipients):
                    await _reset(conn)
                    permanent = all(500 <= e.code < 600 for e in refused.values())
                    return conn, SendResult(msg.key, None, _refusals(refused), permanent)
                stage = "DATA"
                await conn.data(msg.message)
            except SMTPResponseException as exc:
                if exc.code == 421:  # the server is closing this connection
                    conn.close()
                else:
                    await _reset(conn)
                permanent = 500 <= exc.code < 600
                return _alive(conn), SendResult(msg.key, None, f"{stage}: {exc.code} {exc.message}", permanent)
            except (SMTPServerDisconnected, SMTPTimeoutError, OSError, TimeoutError) as exc:
                conn.close()
                if reused and stage == "MAIL FROM" and attempt == 0:
                    continue  # the pooled connection had gone stale; nothing was sent on it
                return None, SendResult(msg.key, None, f"connection lost during {stage}: {exc}", False)
            except ValueError as exc:  # an address aiosmtplib refuses to put on the wire
                await _reset(conn)
                return _alive(conn), SendResult(msg.key, None, f"invalid address: {exc}", True)
            error = _refusals(refused) if refused else None
            return conn, SendResult(msg.key, _provider_id(msg), error, bool(refused))
        raise AssertionError("unreachable")


def _alive(conn: SMTP) -> SMTP | None:
    return conn if conn.is_connected else None


async def _reset(conn: SMTP) -> None:
    # Clear the half-built envelope so the connection can carry the next message.
    try:
        await conn.rset()
    except (SMTPException, OSError, TimeoutError):
        conn.close()


def _refusals(refused: dict[str, SMTPRecipientRefused]) -> str:
    return "recipients refused: " + "; ".join(f"{a}: {e.code} {e.message}" for a, e in refused.items())


def _provider_id(msg: OutgoingMessage) -> str:
    end = msg.message.find(b"\r\n\r\n")
    head = msg.message[:end] if end >= 0 else msg.message
    match = _MESSAGE_ID.search(head)
    return match.group(1).decode("utf-8", "replace").strip() if match else f"smtp:{msg.key}"
