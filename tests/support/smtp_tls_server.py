"""SMTP servers that speak TLS as production relays do, with a certificate authority made for the test.

    certificates = make_certificates(tmp_path)
    with tls_smtp_server("starttls", certificates) as server:
        transport = SmtpTransport(server.url("smtp", "starttls=1"), tls_context=certificates.trusting())
        ...
        assert server.conversations[0].clear_lines() == ["EHLO client.test", "STARTTLS"]

Modes: ``starttls`` (a submission port: STARTTLS first, AUTH offered and taken only once encrypted),
``implicit`` (TLS from the first byte, as ``smtps://``) and ``plain`` (no TLS at all, AUTH offered in
clear, as a misconfigured relay would). Every line the client sends and every reply the server writes
is recorded with whether the connection was encrypted at that moment, so a test can show exactly what
crossed the network in clear. The server runs in its own thread, like ``tests.support.smtp_server``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AnyStr, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.smtp_server import ReceivedMessage, RecordingHandler, _Controller

Mode = Literal["starttls", "implicit", "plain"]
Scheme = Literal["smtp", "smtps"]


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the authority's certificate, which no system trust store knows
    chain: Path  # the server's certificate followed by the authority's, as relays serve them
    key: Path

    def trusting(self) -> ssl.SSLContext:
        """A client context that trusts this authority (and only it)."""
        return ssl.create_default_context(cafile=str(self.ca))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.chain), str(self.key))
        return context


def make_certificates(directory: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certificates:
    """A fresh authority and a server certificate it signed for ``names`` (IP addresses or DNS names)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailroom test authority")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alternative: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    certificates = Certificates(directory / "ca.pem", directory / "chain.pem", directory / "key.pem")
    pem = serialization.Encoding.PEM
    certificates.ca.write_bytes(ca_cert.public_bytes(pem))
    certificates.chain.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    certificates.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certificates


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Line:
    encrypted: bool
    text: str


@dataclass
class Conversation:
    """One connection, as the server saw it."""

    received: list[Line] = field(default_factory=list)  # every line the client sent, message body included
    replies: list[Line] = field(default_factory=list)  # every reply line the server wrote

    def clear_lines(self) -> list[str]:
        return [line.text for line in self.received if not line.encrypted]

    def encrypted_commands(self) -> list[str]:
        """The verbs the client sent once encrypted (the first word of each line, upper-cased)."""
        return [line.text.split(" ", 1)[0].upper() for line in self.received if line.encrypted]

    def clear_replies(self) -> list[str]:
        return [line.text for line in self.replies if not line.encrypted]

    def encrypted_replies(self) -> list[str]:
        return [line.text for line in self.replies if line.encrypted]


@dataclass(frozen=True)
class Login:
    mechanism: str
    username: str
    password: str
    encrypted: bool
    accepted: bool


@dataclass(frozen=True)
class Delivery:
    message: ReceivedMessage
    tls_version: str | None  # e.g. "TLSv1.3"; None when the message came in clear
    username: str | None  # the login of the session that sent it


def _tls_version(server: SMTP) -> str | None:
    ssl_object = server.transport.get_extra_info("ssl_object") if server.transport is not None else None
    return ssl_object.version() if ssl_object is not None else None


class _TlsRecordingHandler(RecordingHandler):
    def __init__(self) -> None:
        super().__init__()
        self.deliveries: list[Delivery] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        accepted = len(self.messages)
        reply = await super().handle_DATA(server, session, envelope)
        for message in self.messages[accepted:]:
            username = session.auth_data if isinstance(session.auth_data, str) else None
            self.deliveries.append(Delivery(message, _tls_version(server), username))
        return reply


class _RecordingSMTP(SMTP):
    def __init__(self, handler: Any, conversations: list[Conversation], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._conversations = conversations
        self._conversation = Conversation()
        self._partial = b""

    def _encrypted(self) -> bool:
        return _tls_version(self) is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the STARTTLS re-entry
            self._conversations.append(self._conversation)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        encrypted = self._encrypted()
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._conversation.received.append(Line(encrypted, line.rstrip(b"\r").decode("utf-8", "replace")))
        super().data_received(data)

    async def push(self, status: AnyStr) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        self._conversation.replies.append(Line(self._encrypted(), text))
        await super().push(status)


class _RecordingController(_Controller):
    def __init__(self, handler: RecordingHandler, conversations: list[Conversation], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.conversations = conversations

    def factory(self) -> SMTP:
        with warnings.catch_warnings():
            # The plain mode offers AUTH without TLS on purpose; aiosmtpd warns about that.
            warnings.simplefilter("ignore", UserWarning)
            return _RecordingSMTP(self.handler, self.conversations, **self.SMTP_kwargs)


class TlsSmtpServer:
    def __init__(
        self, handler: _TlsRecordingHandler, port: int, conversations: list[Conversation], logins: list[Login]
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.handler = handler
        self.conversations = conversations
        self.logins = logins

    def url(self, scheme: Scheme, query: str = "", *, auth: tuple[str, str] | None = None) -> str:
        """The server's URL as MAILROOM_SMTP_URL would hold it, logging in as ``auth`` (default the right login)."""
        user, password = auth or (USERNAME, PASSWORD)
        options = "&".join(option for option in (query, "helo=client.test") if option)
        return f"{scheme}://{user}:{password}@{self.host}:{self.port}?{options}"

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.handler.messages

    @property
    def deliveries(self) -> list[Delivery]:
        return self.handler.deliveries


USERNAME = "mailer"
PASSWORD = "s3cret pass"


@contextmanager
def tls_smtp_server(mode: Mode, certificates: Certificates) -> Iterator[TlsSmtpServer]:
    """Run a recording SMTP server that requires the login ``USERNAME``/``PASSWORD``."""
    handler = _TlsRecordingHandler()
    conversations: list[Conversation] = []
    logins: list[Login] = []
    lock = threading.Lock()

    def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username, password = data.login.decode(), data.password.decode()
        accepted = (username, password) == (USERNAME, PASSWORD)
        with lock:
            logins.append(Login(mechanism, username, password, _tls_version(server) is not None, accepted))
        return AuthResult(success=accepted, handled=False, auth_data=username)

    kwargs: dict[str, Any] = {"authenticator": authenticator, "auth_required": True}
    if mode == "starttls":
        kwargs |= {"tls_context": certificates.server_context(), "require_starttls": True, "auth_require_tls": True}
    elif mode == "implicit":
        # aiosmtpd knows TLS only through STARTTLS; on a TLS-only listener nothing is in clear anyway.
        kwargs |= {"ssl_context": certificates.server_context(), "auth_require_tls": False}
    else:
        kwargs |= {"auth_require_tls": False}
    controller = _RecordingController(handler, conversations, hostname="127.0.0.1", port=0, **kwargs)
    controller.start()
    # start() returns once its readiness probe has read the greeting; that probe is not a client.
    conversations.clear()
    try:
        yield TlsSmtpServer(handler, controller.port, conversations, logins)
    finally:
        controller.stop()
