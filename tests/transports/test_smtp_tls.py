"""SMTP over TLS as production relays speak it: STARTTLS then AUTH on 587, and implicit TLS (smtps).

The servers are real (aiosmtpd) with a certificate signed by an authority made for the test, and
record every line with whether the connection was encrypted then: the tests check what a relay
received, and that neither the login nor any message ever crossed the network in clear.
"""

import ssl
from pathlib import Path

import pytest

from mailroom.transports.base import OutgoingMessage, PermanentSendError, TransientSendError
from mailroom.transports.mime import build_message, make_message_id
from mailroom.transports.smtp import SmtpTransport
from tests.support.smtp_tls_server import (
    PASSWORD,
    USERNAME,
    Certificates,
    Login,
    Mode,
    Scheme,
    TlsSmtpServer,
    make_certificates,
    tls_smtp_server,
)

SENDER = "bounces@mail.example.com"
# (server mode, URL scheme, URL query) of the two ways production relays encrypt.
STARTTLS: tuple[Mode, Scheme, str] = ("starttls", "smtp", "starttls=1")
IMPLICIT: tuple[Mode, Scheme, str] = ("implicit", "smtps", "")
BOTH = pytest.mark.parametrize(("mode", "scheme", "query"), [STARTTLS, IMPLICIT], ids=["starttls", "smtps"])


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def message(n: int, text: str = "") -> OutgoingMessage:
    to = f"user{n}@example.com"
    raw = build_message(
        from_addr=SENDER,
        to=[to],
        cc=[],
        subject=f"Hello {n}",
        text=text or f"Hi user {n}\n",
        html=None,
        message_id=make_message_id(f"row-{n}", "mail.example.com"),
        date=1_700_000_000.0,
        headers={},
        inline=[],
        attachments=[],
    )
    return OutgoingMessage(key=f"row-{n}", envelope_from=SENDER, recipients=(to,), message=raw)


async def send(
    url: str, *messages: OutgoingMessage, pool_size: int = 4, tls_context: ssl.SSLContext | None = None
) -> None:
    """Send through a fresh transport and say goodbye; fail the test unless every message was accepted."""
    transport = SmtpTransport(url, pool_size=pool_size, tls_context=tls_context)
    try:
        results = await transport.send_many(list(messages))
    finally:
        await transport.aclose()
    assert [(r.key, r.error) for r in results] == [(m.key, None) for m in messages]


def assert_nothing_went_through(server: TlsSmtpServer) -> None:
    assert server.messages == []
    assert server.logins == []
    for conversation in server.conversations:
        assert conversation.encrypted_commands() == []
        assert set(conversation.clear_lines()) <= {"EHLO client.test", "STARTTLS"}


@pytest.mark.parametrize("query", ["starttls=1", ""], ids=["starttls-required", "starttls-when-offered"])
async def test_submission_relay_gets_every_message_over_tls_after_the_login(
    certificates: Certificates, query: str
) -> None:
    long_text = "".join(f"line {i} of a long newsletter\n" for i in range(40_000))  # over 1 MiB
    with tls_smtp_server("starttls", certificates) as server:
        await send(
            server.url("smtp", query),
            message(1),
            message(2, long_text),
            message(3),
            pool_size=1,
            tls_context=certificates.trusting(),
        )

        assert [d.message.rcpt_tos for d in server.deliveries] == [[f"user{n}@example.com"] for n in (1, 2, 3)]
        assert {(d.tls_version or "").startswith("TLSv1.") for d in server.deliveries} == {True}
        assert {d.username for d in server.deliveries} == {USERNAME}
        body = server.deliveries[1].message.message.get_body(("plain",))
        assert body is not None and body.get_content().replace("\r\n", "\n") == long_text
        assert server.logins == [Login("PLAIN", USERNAME, PASSWORD, encrypted=True, accepted=True)]
        # One connection, upgraded once, carried the three messages.
        [conversation] = server.conversations
        assert conversation.clear_lines() == ["EHLO client.test", "STARTTLS"]


async def test_auth_is_neither_offered_nor_sent_before_starttls(certificates: Certificates) -> None:
    with tls_smtp_server("starttls", certificates) as server:
        await send(server.url("smtp", "starttls=1"), message(1), tls_context=certificates.trusting())

        [conversation] = server.conversations
        # What the client was told before the upgrade: STARTTLS, and no AUTH to be tempted by.
        before = conversation.clear_replies()
        assert "250-STARTTLS" in before
        assert [reply for reply in before if "AUTH" in reply.upper()] == []
        assert "250-AUTH LOGIN PLAIN" in conversation.encrypted_replies()
        # What the client said in clear: the greeting and the upgrade, nothing else.
        assert conversation.clear_lines() == ["EHLO client.test", "STARTTLS"]
        assert conversation.encrypted_commands()[:3] == ["EHLO", "AUTH", "MAIL"]
        assert conversation.encrypted_commands().count("AUTH") == 1
        assert [login.encrypted for login in server.logins] == [True]
        assert len(server.messages) == 1


async def test_implicit_tls_carries_the_whole_session(certificates: Certificates) -> None:
    with tls_smtp_server("implicit", certificates) as server:
        await send(server.url("smtps"), message(1), message(2), pool_size=1, tls_context=certificates.trusting())

        assert [d.message.rcpt_tos for d in server.deliveries] == [["user1@example.com"], ["user2@example.com"]]
        assert {(d.tls_version or "").startswith("TLSv1.") for d in server.deliveries} == {True}
        assert {d.username for d in server.deliveries} == {USERNAME}
        assert server.logins == [Login("PLAIN", USERNAME, PASSWORD, encrypted=True, accepted=True)]
        [conversation] = server.conversations
        assert conversation.clear_lines() == [] and conversation.clear_replies() == []
        assert conversation.encrypted_commands()[:3] == ["EHLO", "AUTH", "MAIL"]


@BOTH
async def test_wrong_password_over_tls_is_refused_without_sending(
    certificates: Certificates, mode: Mode, scheme: Scheme, query: str
) -> None:
    with tls_smtp_server(mode, certificates) as server:
        transport = SmtpTransport(
            server.url(scheme, query, auth=(USERNAME, "wrong")), tls_context=certificates.trusting()
        )
        with pytest.raises(PermanentSendError, match="refused the credentials: 535"):
            await transport.send_many([message(1)])

        # The client tries each mechanism the server offers; every try was encrypted, none accepted.
        assert {(x.username, x.password, x.encrypted, x.accepted) for x in server.logins} == {
            (USERNAME, "wrong", True, False)
        }
        assert server.messages == []


@BOTH
async def test_an_unverifiable_certificate_fails_the_send_before_anything_is_sent(
    certificates: Certificates, mode: Mode, scheme: Scheme, query: str
) -> None:
    with tls_smtp_server(mode, certificates) as server:
        # No tls_context: the system's authorities, none of which signed the test's certificate.
        transport = SmtpTransport(server.url(scheme, query))
        with pytest.raises(TransientSendError) as failure:
            await transport.send_many([message(1), message(2)])

        assert failure.value.reason.startswith(
            f"TLS certificate of SMTP server 127.0.0.1:{server.port} could not be verified: self"
        )
        assert failure.value.reason.endswith("signed certificate in certificate chain")
        assert_nothing_went_through(server)


@BOTH
async def test_verify_0_accepts_a_certificate_nobody_vouches_for(
    certificates: Certificates, mode: Mode, scheme: Scheme, query: str
) -> None:
    with tls_smtp_server(mode, certificates) as server:
        await send(server.url(scheme, "&".join(filter(None, (query, "verify=0")))), message(1))

        [delivery] = server.deliveries
        assert delivery.message.rcpt_tos == ["user1@example.com"]
        assert (delivery.tls_version or "").startswith("TLSv1.")
        assert server.logins == [Login("PLAIN", USERNAME, PASSWORD, encrypted=True, accepted=True)]


@BOTH
async def test_a_trusted_authority_still_has_to_have_certified_the_host_name(
    tmp_path: Path, mode: Mode, scheme: Scheme, query: str
) -> None:
    elsewhere = make_certificates(tmp_path, names=("relay.example.net",))
    with tls_smtp_server(mode, elsewhere) as server:
        transport = SmtpTransport(server.url(scheme, query), tls_context=elsewhere.trusting())
        with pytest.raises(TransientSendError) as failure:
            await transport.send_many([message(1)])

        assert failure.value.reason == (
            f"TLS certificate of SMTP server 127.0.0.1:{server.port} could not be verified: "
            "IP address mismatch, certificate is not valid for '127.0.0.1'."
        )
        assert_nothing_went_through(server)


async def test_starttls_required_but_not_offered_sends_nothing_in_clear(certificates: Certificates) -> None:
    with tls_smtp_server("plain", certificates) as server:
        transport = SmtpTransport(server.url("smtp", "starttls=1"))
        with pytest.raises(TransientSendError) as failure:
            await transport.send_many([message(1)])

        assert failure.value.reason.startswith(f"cannot connect to SMTP server 127.0.0.1:{server.port}: ")
        assert "STARTTLS extension not supported by server" in failure.value.reason
        [conversation] = server.conversations
        assert "250-AUTH LOGIN PLAIN" in conversation.clear_replies()  # the login would have been taken in clear
        assert conversation.clear_lines() == ["EHLO client.test"]
        assert server.logins == [] and server.messages == []


async def test_credentials_without_a_starttls_option_are_never_sent_in_clear(certificates: Certificates) -> None:
    # The relay offers AUTH in clear and no STARTTLS (or somebody in between stripped the offer).
    with tls_smtp_server("plain", certificates) as server:
        transport = SmtpTransport(server.url("smtp", ""))
        with pytest.raises(TransientSendError, match="STARTTLS extension not supported"):
            await transport.send_many([message(1)])
        await transport.aclose()
        [conversation] = server.conversations
        assert conversation.clear_lines() == ["EHLO client.test"]
        assert server.logins == [] and server.messages == []
