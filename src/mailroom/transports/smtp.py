"""SMTP relay over a small pool of reused connections.

Opening a connection (TCP, EHLO, STARTTLS, AUTH) costs several round trips; a campaign
sends thousands of messages, so connections are opened lazily, kept for the next message
and the next call, and replaced when the server drops them. At most ``pool_size`` are
open at once, shared by every call sent through this transport.

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

from aiosmtplib import SMTP, SMTPAuthenticationError, SMTPException, SMTPNotSupported, SMTPResponseException

from mailroom.transports.base import (
    Capabilities,
    OutgoingMessage,
    PermanentSendError,
    SendError,
    SendResult,
    TransientSendError,
    settle,
)
from mailroom.transports.smtp_wire import Reply, Wire, quit_politely, transact

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

        Query options: ``starttls`` (1/0; absent = opportunistic without credentials and required
        with them, so a password never crosses the network in clear unless ``starttls=0`` says so),
        ``timeout`` (seconds, default 30), ``verify`` (0 to accept self-signed certificates), ``helo``
        (the name given in EHLO; default the machine's FQDN).
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
        if start_tls is None and parts.username:
            # A relay that does not offer STARTTLS (or somebody between us stripping the offer) would
            # otherwise be handed the password in clear.
            start_tls = True
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
    # Messages per call: the sender records outcomes every call, which bounds what a killed worker
    # can have sent unrecorded.
    capabilities = Capabilities(max_recipients_per_call=100)

    def __init__(self, url: str, *, pool_size: int = 4, tls_context: ssl.SSLContext | None = None) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.settings = SmtpSettings.from_url(url)
        self.pool_size = pool_size
        self.connections_opened = 0
        self._tls_context = tls_context
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._helo = self.settings.helo

    def __repr__(self) -> str:  # never show the password
        s = self.settings
        return f"SmtpTransport({'smtps' if s.use_tls else 'smtp'}://{s.host}:{s.port}, pool_size={self.pool_size})"

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        outcomes: list[SendResult | SendError | None] = [None] * len(messages)
        pending = iter(range(len(messages)))  # shared by the workers: each index is taken once
        abort: list[SendError] = []
        workers = min(self.pool_size, len(messages))
        await asyncio.gather(*(self._worker(messages, outcomes, pending, abort) for _ in range(workers)))
        return settle(messages, [o for o in outcomes if o is not None])

    async def aclose(self) -> None:
        """Say QUIT on the idle connections; call once no send is in flight."""
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                async with asyncio.timeout(5):
                    await quit_politely(conn.wire)
            except (ConnectionError, OSError, TimeoutError):
                conn.wire.close()

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
                        abort.append(outcome)  # the server is unusable: stop the whole call
                    outcomes[index] = outcome
                finished = True
            finally:
                # A connection interrupted mid-transaction (cancellation) is in an unknown state.
                if conn is not None and finished and conn.wire.alive:
                    self._idle.append(conn)
                elif conn is not None:
                    conn.wire.close()

    async def _connect(self) -> _Connection:
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
            unverified = _unverified_certificate(exc)
            if unverified is not None:
                detail = unverified.verify_message or unverified.reason or str(unverified)
                raise TransientSendError(
                    f"TLS certificate of SMTP server {where} could not be verified: {detail}"
                ) from exc
            raise TransientSendError(f"cannot connect to SMTP server {where}: {exc}") from exc
        self.connections_opened += 1
        # The greeting, TLS and login are done; transactions go through the faster protocol from here.
        transport = conn.transport
        assert transport is not None
        wire = Wire(transport)
        transport.set_protocol(wire)
        return _Connection(
            wire,
            pipelining=conn.supports_extension("pipelining"),
            smtputf8=conn.supports_extension("smtputf8"),
            eightbit=conn.supports_extension("8bitmime"),
        )

    async def _deliver(
        self, conn: _Connection | None, msg: OutgoingMessage
    ) -> tuple[_Connection | None, SendResult | SendError]:
        """One transaction; returns the connection to use next (None when it is gone)."""
        for attempt in range(2):
            reused = conn is not None and conn.wire.alive
            if not reused:
                if conn is not None:
                    conn.wire.close()
                try:
                    conn = await self._connect()
                except SendError as exc:
                    return None, exc
            assert conn is not None
            ascii_envelope = msg.envelope_from.isascii() and all(r.isascii() for r in msg.recipients)
            options = [] if ascii_envelope else ["SMTPUTF8"]
            if conn.eightbit and not all(segment.isascii() for segment in msg.segments):
                options.append("BODY=8BITMIME")
            try:
                async with asyncio.timeout(self.settings.timeout):
                    outcome = await transact(
                        conn.wire,
                        sender=msg.envelope_from,
                        recipients=list(msg.recipients),
                        message=msg.segments,
                        options=options,
                        pipelining=conn.pipelining,
                    )
            except ValueError as exc:  # an address that cannot go on the wire; nothing was sent
                return conn, SendResult(msg.key, None, f"invalid address: {exc}", True)
            except (ConnectionError, OSError, TimeoutError) as exc:
                body_started = conn.wire.body_started
                conn.wire.close()
                if reused and not body_started and attempt == 0:
                    continue  # the pooled connection had gone stale; no message went out on it
                stage = "DATA" if body_started else "MAIL FROM"
                return None, SendResult(msg.key, None, f"connection lost during {stage}: {exc or 'timeout'}", False)
            alive = conn if conn.wire.alive else None
            if outcome.accepted:
                error = _refusals(outcome.refused) if outcome.refused else None
                return alive, SendResult(msg.key, _provider_id(msg), error, bool(outcome.refused))
            if outcome.reply is None:  # every recipient refused
                permanent = all(500 <= r.code < 600 for r in outcome.refused.values())
                return alive, SendResult(msg.key, None, _refusals(outcome.refused), permanent)
            permanent = 500 <= outcome.reply.code < 600
            return alive, SendResult(msg.key, None, f"{outcome.stage}: {outcome.reply}", permanent)
        raise AssertionError("unreachable")


@dataclass(slots=True)
class _Connection:
    wire: Wire
    pipelining: bool
    smtputf8: bool
    eightbit: bool


def _unverified_certificate(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The verification failure behind ``exc``: aiosmtplib wraps it under implicit TLS, not after STARTTLS."""
    cause: BaseException | None = exc
    for _ in range(5):  # bounded: an exception can be made its own cause
        if cause is None or isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _refusals(refused: dict[str, Reply]) -> str:
    return "recipients refused: " + "; ".join(f"{a}: {r}" for a, r in refused.items())


def _provider_id(msg: OutgoingMessage) -> str:
    first = msg.segments[0]  # the header block is built as one piece: it is all in the first segment
    end = first.find(b"\r\n\r\n")
    head = first[:end] if end >= 0 else first
    match = _MESSAGE_ID.search(head)
    return match.group(1).decode("utf-8", "replace").strip() if match else f"smtp:{msg.key}"
