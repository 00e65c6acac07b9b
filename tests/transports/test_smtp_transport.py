import socket
from collections.abc import Iterator

import pytest

from mailroom.transports.base import (
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
    Transport,
    send_one,
)
from mailroom.transports.mime import build_message, make_message_id
from mailroom.transports.smtp import SmtpSettings, SmtpTransport
from tests.support.smtp_server import FakeSmtpServer, smtp_server

SENDER = "bounces@mail.example.com"


@pytest.fixture(params=[True, False], ids=["pipelined", "one-command-at-a-time"])
def server(request: pytest.FixtureRequest) -> Iterator[FakeSmtpServer]:
    with smtp_server(pipelining=request.param) as running:
        yield running


def raw_message(n: int, to: str) -> bytes:
    return build_message(
        from_addr=f"Bob Ray <{SENDER}>",
        to=[f"User {n} <{to}>"],
        cc=[],
        subject=f"Hello {n} — ünïcode",
        text=f"Hi user {n}\n",
        html=f"<p>Hi user {n}</p>",
        message_id=make_message_id(f"row-{n}", "mail.example.com"),
        date=1_700_000_000.0,
        headers={"Feedback-ID": "rechat:b1:rechat"},
        inline=[],
        attachments=[],
    )


def message(n: int, to: str | None = None, bcc: tuple[str, ...] = ()) -> OutgoingMessage:
    to = to or f"user{n}@example.com"
    return OutgoingMessage(key=f"row-{n}", envelope_from=SENDER, recipients=(to, *bcc), message=raw_message(n, to))


async def test_delivers_exactly_what_was_built(server: FakeSmtpServer) -> None:
    transport = SmtpTransport(server.url)
    assert isinstance(transport, Transport)
    msg = message(1, bcc=("hidden@example.com",))
    [result] = await transport.send_many([msg])
    await transport.aclose()

    assert result.key == "row-1"
    assert result.provider_id == "row-1@mail.example.com"  # the Message-ID, without brackets
    assert (result.error, result.permanent) == (None, False)
    [received] = server.messages
    assert received.envelope_from == SENDER
    assert received.rcpt_tos == ["user1@example.com", "hidden@example.com"]
    assert isinstance(msg.message, bytes)
    assert received.raw.replace(b"\r\n", b"\n") == msg.message.replace(b"\r\n", b"\n")
    parsed = received.message
    assert parsed["From"] == f"Bob Ray <{SENDER}>"
    assert parsed["To"] == "User 1 <user1@example.com>"
    assert parsed["Bcc"] is None and b"hidden@" not in received.raw
    assert parsed["Subject"] == "Hello 1 — ünïcode"
    assert parsed["Message-ID"] == "<row-1@mail.example.com>"
    assert parsed["Feedback-ID"] == "rechat:b1:rechat"
    assert parsed.get_body(("plain",)).get_content() == "Hi user 1\r\n"  # type: ignore[union-attr]
    assert parsed.get_body(("html",)).get_content() == "<p>Hi user 1</p>"  # type: ignore[union-attr]
    assert server.quit_count == 1  # aclose said goodbye


async def test_pool_reuses_connections_across_messages_and_calls(server: FakeSmtpServer) -> None:
    transport = SmtpTransport(server.url, pool_size=4)
    results = await transport.send_many([message(n) for n in range(50)])
    assert all(r.provider_id == f"row-{n}@mail.example.com" for n, r in enumerate(results))
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(f"user{n}@example.com" for n in range(50))
    assert server.connections <= 4
    assert server.ehlo_count <= 4
    opened = server.connections

    results = await transport.send_many([message(n) for n in range(50, 60)])
    assert all(r.accepted for r in results)
    assert server.connections == opened  # the second call rode on the same connections
    await transport.aclose()
    assert server.quit_count == opened


async def test_refused_recipients_are_permanent_or_transient(server: FakeSmtpServer) -> None:
    server.refuse("gone@example.com", "550 5.1.1 No such user")
    server.refuse("full@example.com", "452 4.2.2 Mailbox full")
    server.refuse("later@example.com", "451 4.7.1 Greylisted, try again")
    transport = SmtpTransport(server.url, pool_size=2)
    gone, full, partly, fine = await transport.send_many(
        [
            message(1, "gone@example.com"),
            message(2, "full@example.com", bcc=("later@example.com",)),
            message(3, "ok@example.com", bcc=("gone@example.com",)),
            message(4),
        ]
    )
    await transport.aclose()
    assert (gone.provider_id, gone.permanent) == (None, True)
    assert gone.error == "recipients refused: gone@example.com: 550 5.1.1 No such user"
    assert (full.provider_id, full.permanent) == (None, False)
    assert full.error is not None and "452 4.2.2" in full.error and "451 4.7.1" in full.error
    # Accepted for one recipient, refused for the other: sent (never retry), with the refusal noted.
    assert partly.provider_id == "row-3@mail.example.com"
    assert partly.error == "recipients refused: gone@example.com: 550 5.1.1 No such user"
    assert fine.accepted and fine.error is None
    assert [(m.rcpt_tos, m.message["Message-ID"]) for m in server.messages] == [
        (["ok@example.com"], "<row-3@mail.example.com>"),
        (["user4@example.com"], "<row-4@mail.example.com>"),
    ]


async def test_data_replies_map_to_transient_and_permanent(server: FakeSmtpServer) -> None:
    transport = SmtpTransport(server.url, pool_size=1)
    server.fail_next(1, "451 4.3.0 Local error")
    server.fail_next(1, "554 5.7.1 Message rejected as spam")
    busy, spam, ok = await transport.send_many([message(1), message(2), message(3)])
    assert (busy.provider_id, busy.permanent, busy.error) == (None, False, "DATA: 451 4.3.0 Local error")
    assert (spam.provider_id, spam.permanent) == (None, True)
    assert spam.error == "DATA: 554 5.7.1 Message rejected as spam"
    assert ok.accepted
    assert server.connections == 1  # errors reset the envelope; the connection carried on
    await transport.aclose()


async def test_421_drops_the_connection_and_the_next_message_reconnects(server: FakeSmtpServer) -> None:
    transport = SmtpTransport(server.url, pool_size=1)
    server.fail_next(1, "421 4.3.2 Shutting down", stage="mail")
    first, second = await transport.send_many([message(1), message(2)])
    assert (first.provider_id, first.permanent) == (None, False)
    assert first.error == "MAIL FROM: 421 4.3.2 Shutting down"
    assert second.accepted
    assert server.connections == 2
    await transport.aclose()


async def test_a_connection_dropped_while_idle_is_replaced(server: FakeSmtpServer) -> None:
    transport = SmtpTransport(server.url, pool_size=1)
    assert (await transport.send_many([message(1)]))[0].accepted
    server.drop_connections()
    [result] = await transport.send_many([message(2)])
    assert result.accepted
    assert server.connections == 2
    assert [m.rcpt_tos[0] for m in server.messages] == ["user1@example.com", "user2@example.com"]
    await transport.aclose()


async def test_unreachable_server_fails_the_call_as_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = SmtpTransport(f"smtp://127.0.0.1:{port}?timeout=2&helo=client.test")
    with pytest.raises(TransientSendError, match="cannot connect to SMTP server"):
        await transport.send_many([message(1), message(2)])
    with pytest.raises(TransientSendError):
        await send_one(transport, OutgoingMessage("k1", SENDER, ["a@example.com"], raw_message(1, "a@example.com")))


async def test_credentials_from_the_url() -> None:
    with smtp_server(auth=("mailer", "p@ss:word")) as server:
        good = SmtpTransport(server.url.replace("p@ss:word", "p%40ss%3Aword"))
        [result] = await good.send_many([message(1)])
        assert result.accepted and len(server.messages) == 1
        await good.aclose()

        bad = SmtpTransport(f"smtp://mailer:wrong@127.0.0.1:{server.port}?helo=client.test&starttls=0")
        with pytest.raises(PermanentSendError, match="refused the credentials: 535"):
            await bad.send_many([message(2)])
        assert len(server.messages) == 1


async def test_send_returns_the_result_or_raises(server: FakeSmtpServer) -> None:
    transport = SmtpTransport(server.url)
    raw = raw_message(7, "user7@example.com")
    result = await send_one(transport, OutgoingMessage("k7", SENDER, ["user7@example.com"], raw))
    assert (result.key, result.provider_id) == ("k7", "row-7@mail.example.com")
    server.refuse("nobody@example.com")
    with pytest.raises(PermanentSendError, match="550"):
        await send_one(transport, OutgoingMessage("k8", SENDER, ["nobody@example.com"], raw))
    await transport.aclose()


def test_settings_from_url() -> None:
    s = SmtpSettings.from_url("smtp://user%40x.com:p%3Ass@smtp.example.com:587?starttls=1&timeout=5")
    assert (s.host, s.port, s.username, s.password) == ("smtp.example.com", 587, "user@x.com", "p:ss")
    assert (s.use_tls, s.start_tls, s.timeout, s.validate_certs) == (False, True, 5.0, True)
    s = SmtpSettings.from_url("smtps://relay.example.com?verify=0")
    assert (s.port, s.use_tls, s.start_tls, s.validate_certs, s.username) == (465, True, False, False, None)
    s = SmtpSettings.from_url("smtp://localhost")
    assert (s.port, s.start_tls, s.timeout) == (25, None, 30.0)
    # With credentials TLS is required unless the URL says otherwise.
    assert SmtpSettings.from_url("smtp://u:p@relay.example.com").start_tls is True
    assert SmtpSettings.from_url("smtp://u:p@relay.example.com?starttls=0").start_tls is False
    assert SmtpSettings.from_url("smtp://h?starttls=1").port == 587
    for bad in ("http://host", "smtp://", "smtp://h?starttls=maybe"):
        with pytest.raises(ValueError):
            SmtpSettings.from_url(bad)
    assert "secret" not in repr(SmtpTransport("smtp://u:secret@h:25"))
