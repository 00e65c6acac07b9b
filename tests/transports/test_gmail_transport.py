import base64
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import httpx
import pytest

from mailroom.transports.base import (
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
    Transport,
)
from mailroom.transports.gmail import MAILBOX_ACTIONS, GmailOptions, GmailTransport
from mailroom.transports.mime import Attachment, build_segments, encode_part
from tests.support.google_server import MODIFY_SCOPE, SEND_SCOPE, FakeGmail, gmail_server

TOKEN = "ya29.a0AfH6SMBx-valid"
OWNER = "Bob Ray <bob@gmail.com>"


class Tokens:
    """Hands out ``tokens`` in turn: the first, then the next on each refresh."""

    def __init__(self, *tokens: str, error: Exception | None = None) -> None:
        self.tokens = list(tokens)
        self.error = error
        self.calls: list[bool] = []  # the refresh flag of each call

    async def access_token(self, *, refresh: bool = False) -> str:
        self.calls.append(refresh)
        if self.error is not None:
            raise self.error
        if refresh:
            self.tokens.pop(0)
        return self.tokens[0]


@pytest.fixture(scope="module")
def gmail() -> Iterator[FakeGmail]:
    with gmail_server(tokens={TOKEN}) as server:
        yield server


@pytest.fixture
async def transport(gmail: FakeGmail) -> AsyncIterator[GmailTransport]:
    gmail.reset()
    gmail.grant(TOKEN)
    client = GmailTransport(api_url=gmail.url, tokens=Tokens(TOKEN), concurrency=1)
    yield client
    await client.aclose()


def message(
    n: int,
    *,
    thread_id: str | None = None,
    inline: tuple[bytes, ...] = (),
    attachments: tuple[bytes, ...] = (),
    headers: dict[str, str] | None = None,
) -> OutgoingMessage:
    segments = build_segments(
        from_addr=OWNER,
        to=[f"User {n} <user{n}@example.com>"],
        cc=["Cy <cy@example.com>"],
        bcc=["hidden@example.com"],
        subject=f"Hello {n}",
        text=f"Hi {n}",
        html=f'<p>Hi {n}</p><img src="cid:logo">',
        message_id=f"<row-{n}@gmail.com>",
        date=1_700_000_000.0,
        headers=headers or {},
        inline=inline,
        attachments=attachments,
    )
    recipients = (f"user{n}@example.com", "cy@example.com", "hidden@example.com")
    return OutgoingMessage(f"row-{n}", "bob@gmail.com", recipients, segments, options=GmailOptions(thread_id=thread_id))


def parts(mime: EmailMessage) -> dict[str, EmailMessage]:
    return {str(p.get_content_type()): p for p in mime.walk() if not p.is_multipart()}


async def test_mime_arrives_decoded_intact(gmail: FakeGmail, transport: GmailTransport) -> None:
    assert isinstance(transport, Transport)
    logo = Attachment("logo.png", "image/png", b"\x89PNG\r\n\x1a\n-logo", "logo")
    report = Attachment("Résumé.pdf", "application/pdf", b"%PDF-1.7 data")
    threading = {"In-Reply-To": "<orig@example.com>", "References": "<root@example.com> <orig@example.com>"}
    sent = message(
        1,
        inline=(encode_part(logo, inline=True),),
        attachments=(encode_part(report, inline=False),),
        headers=threading,
    )
    [result] = await transport.send_many([sent])

    [received] = gmail.sent
    assert (result.key, result.provider_id, result.error) == ("row-1", received.id, None)
    assert result.thread_id == received.thread_id == received.id  # a new thread is named after its first message
    [request] = gmail.requests
    assert (request.path, request.status, request.token) == ("/gmail/v1/users/me/messages/send", 200, TOKEN)
    assert set(request.json) == {"raw"}  # no threadId when the message starts a thread
    assert received.via == "json"
    assert received.raw == sent.joined()
    mime = received.mime
    assert mime["From"] == OWNER
    assert mime["To"] == "User 1 <user1@example.com>"
    assert mime["Cc"] == "Cy <cy@example.com>"
    assert mime["Bcc"] == "hidden@example.com"  # Gmail reads Bcc recipients from the message itself
    assert mime["Subject"] == "Hello 1"
    assert mime["In-Reply-To"] == "<orig@example.com>"
    assert mime["References"] == "<root@example.com> <orig@example.com>"
    by_type = parts(mime)
    assert by_type["text/plain"].get_content().strip() == "Hi 1"
    assert by_type["text/html"].get_content().strip() == '<p>Hi 1</p><img src="cid:logo">'
    image = by_type["image/png"]
    assert (image["Content-ID"], image.get_content_disposition()) == ("<logo>", "inline")
    assert image.get_content() == logo.data
    pdf = by_type["application/pdf"]
    assert (pdf.get_filename(), pdf.get_content_disposition()) == ("Résumé.pdf", "attachment")
    assert pdf.get_content() == report.data


async def test_thread_id_is_passed_and_returned(gmail: FakeGmail, transport: GmailTransport) -> None:
    first, reply = await transport.send_many([message(1, thread_id="18c2f0a1b2c3d4e5"), message(2)])
    assert first.thread_id == "18c2f0a1b2c3d4e5"
    assert gmail.requests[0].json["threadId"] == "18c2f0a1b2c3d4e5"
    assert gmail.sent[0].thread_id == "18c2f0a1b2c3d4e5"
    assert reply.thread_id == gmail.sent[1].id != first.thread_id


async def test_message_over_5_mb_goes_through_the_upload_endpoint(gmail: FakeGmail, transport: GmailTransport) -> None:
    big = Attachment("scan.bin", "application/octet-stream", os.urandom(6 * 1024 * 1024))
    sent = message(1, thread_id="18c2f0a1b2c3d4e5", attachments=(encode_part(big, inline=False),))
    [result] = await transport.send_many([sent])

    [request] = gmail.requests  # straight to the upload endpoint, no refused JSON attempt first
    assert request.path == "/upload/gmail/v1/users/me/messages/send"
    assert request.query == {"uploadType": "multipart"}
    assert request.headers["content-type"].startswith("multipart/related; boundary=")
    assert request.token == TOKEN
    [received] = gmail.sent
    assert (received.via, received.thread_id, result.provider_id) == ("upload", "18c2f0a1b2c3d4e5", received.id)
    assert result.thread_id == "18c2f0a1b2c3d4e5"
    assert received.raw == sent.joined()
    assert parts(received.mime)["application/octet-stream"].get_content() == big.data


async def test_upload_is_sent_again_whole_after_a_refresh(gmail: FakeGmail) -> None:
    gmail.reset()
    gmail.grant("ya29.fresh")
    big = Attachment("scan.bin", "application/octet-stream", os.urandom(6 * 1024 * 1024))
    sent = message(1, attachments=(encode_part(big, inline=False),))
    transport = GmailTransport(api_url=gmail.url, tokens=Tokens("ya29.expired", "ya29.fresh"))
    [result] = await transport.send_many([sent])
    await transport.aclose()
    assert result.accepted
    assert [(r.path.startswith("/upload/"), r.status) for r in gmail.requests] == [(True, 401), (True, 200)]
    assert gmail.sent[0].raw == sent.joined()


async def test_a_few_messages_in_flight_results_in_order(gmail: FakeGmail) -> None:
    gmail.reset()
    gmail.grant(TOKEN)
    gmail.answer_delay = 0.05
    transport = GmailTransport(api_url=gmail.url, tokens=Tokens(TOKEN), concurrency=3)
    sent = [message(n) for n in range(10)]
    results = await transport.send_many(sent)
    await transport.aclose()
    assert gmail.peak_in_flight == 3
    assert [r.key for r in results] == [m.key for m in sent]
    by_id = {m.id: m for m in gmail.sent}
    assert [by_id[r.provider_id or ""].mime["Subject"] for r in results] == [f"Hello {n}" for n in range(10)]


async def test_message_over_35_mb_is_refused_without_a_request(gmail: FakeGmail, transport: GmailTransport) -> None:
    huge = OutgoingMessage("row-9", "bob@gmail.com", ("a@example.com",), (message(9).joined(), b"x" * (36 << 20)))
    ok, refused = await transport.send_many([message(1), huge])
    assert ok.accepted
    assert (refused.provider_id, refused.permanent) == (None, True)
    assert refused.error is not None and "at most 35 MB" in refused.error
    assert len(gmail.requests) == 1


async def test_401_gets_a_new_token_and_retries_once(gmail: FakeGmail) -> None:
    gmail.reset()
    gmail.grant("ya29.fresh")
    tokens = Tokens("ya29.expired", "ya29.fresh")
    transport = GmailTransport(api_url=gmail.url, tokens=tokens)  # several requests in flight at once
    results = await transport.send_many([message(1), message(2), message(3)])
    await transport.aclose()
    assert all(r.accepted for r in results)
    assert tokens.calls == [False, True]  # the requests refused together share one refresh
    assert sorted(r.status for r in gmail.requests) == [200, 200, 200, 401, 401, 401]
    assert {r.token for r in gmail.requests if r.status == 200} == {"ya29.fresh"}


async def test_401_after_refresh_fails_the_call(gmail: FakeGmail) -> None:
    gmail.reset()
    tokens = Tokens("ya29.expired", "ya29.also-refused")
    transport = GmailTransport(api_url=gmail.url, tokens=tokens, concurrency=1)
    with pytest.raises(PermanentSendError, match="reconnect your Gmail account"):
        await transport.send_many([message(1), message(2)])
    await transport.aclose()
    assert [r.status for r in gmail.requests] == [401, 401]  # one retry, then the rest of the call stops


async def test_revoked_account_from_the_token_source_propagates(gmail: FakeGmail) -> None:
    gmail.reset()
    revoked = PermanentSendError("Google revoked access: reconnect your Gmail account")
    transport = GmailTransport(api_url=gmail.url, tokens=Tokens(error=revoked))
    with pytest.raises(PermanentSendError) as info:
        await transport.send_many([message(1)])
    assert info.value is revoked
    with pytest.raises(PermanentSendError) as info:
        await transport.apply_action("read", ["18c2f0a1b2c3d4e5"])
    assert info.value is revoked
    await transport.aclose()
    assert gmail.requests == []


async def test_429_is_transient_with_retry_after(gmail: FakeGmail, transport: GmailTransport) -> None:
    gmail.fail_next(1, 429, "rateLimitExceeded", retry_after=30)
    with pytest.raises(TransientSendError) as info:
        await transport.send_many([message(1), message(2), message(3)])
    assert info.value.retry_after == 30.0
    assert info.value.reason == "Gmail answered 429: Rate Limit Exceeded"
    assert len(gmail.requests) == 1  # the credential pauses instead of hammering

    later = datetime.now(UTC) + timedelta(seconds=120)
    gmail.fail_next(1, 429, "rateLimitExceeded", retry_after=format_datetime(later, usegmt=True))
    with pytest.raises(TransientSendError) as info:
        await transport.send_many([message(1)])
    assert info.value.retry_after is not None and 100 < info.value.retry_after <= 120

    # Gmail's sending limits say when in the message instead of a header.
    until = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    gmail.fail_next(1, 429, "rateLimitExceeded", message=f"User-rate limit exceeded.  Retry after {until}")
    with pytest.raises(TransientSendError) as info:
        await transport.send_many([message(1)])
    assert info.value.retry_after is not None and 7100 < info.value.retry_after <= 7200


async def test_403_rate_limit_is_transient_with_a_default_wait(gmail: FakeGmail, transport: GmailTransport) -> None:
    gmail.fail_next(1, 403, "userRateLimitExceeded")
    with pytest.raises(TransientSendError) as info:
        await transport.send_many([message(1)])
    assert info.value.retry_after == 60.0


async def test_5xx_is_transient(gmail: FakeGmail, transport: GmailTransport) -> None:
    gmail.fail_next(1, 503, "backendError")
    with pytest.raises(TransientSendError) as info:
        await transport.send_many([message(1)])
    assert (info.value.reason, info.value.retry_after) == ("Gmail answered 503: Backend Error", 60.0)

    gmail.reset()
    gmail.grant(TOKEN)
    gmail.fail_next(1, 500, "backendError", after=1)
    ok, failed, skipped = await transport.send_many([message(1), message(2), message(3)])
    assert ok.accepted
    assert (failed.provider_id, failed.permanent, failed.error) == (None, False, "Gmail answered 500: Backend Error")
    assert (skipped.provider_id, skipped.permanent) == (None, False)
    assert [r.status for r in gmail.requests] == [200, 500]


async def test_network_error_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the request: nothing listens there
    transport = GmailTransport(api_url=f"http://127.0.0.1:{port}", tokens=Tokens(TOKEN))
    with pytest.raises(TransientSendError, match="cannot reach Gmail"):
        await transport.send_many([message(1)])
    await transport.aclose()


async def test_missing_scope_is_permanent_and_named(gmail: FakeGmail, transport: GmailTransport) -> None:
    gmail.grant(TOKEN, {"https://www.googleapis.com/auth/gmail.readonly"})
    with pytest.raises(PermanentSendError) as info:
        await transport.send_many([message(1), message(2)])
    assert "mail.send" in info.value.reason
    assert [r.status for r in gmail.requests] == [403]

    gmail.grant(TOKEN, {SEND_SCOPE})
    with pytest.raises(PermanentSendError) as info:
        await transport.apply_action("archive", ["18c2f0a1b2c3d4e5"])
    assert "mail.modify" in info.value.reason


async def test_400_for_one_message_fails_only_that_message(gmail: FakeGmail, transport: GmailTransport) -> None:
    raw = b"From: bob@gmail.com\r\nTo: not-an-address\r\nSubject: x\r\n\r\nhi\r\n"
    bad = OutgoingMessage("row-x", "bob@gmail.com", ("not-an-address",), raw)
    first, refused, last = await transport.send_many([message(1), bad, message(2)])
    assert first.accepted and last.accepted
    assert (refused.key, refused.provider_id, refused.permanent) == ("row-x", None, True)
    assert refused.error == "Gmail refused the message (400): Invalid To header"
    assert [r.status for r in gmail.requests] == [200, 400, 200]


async def test_batch_modify_splits_2500_ids(gmail: FakeGmail, transport: GmailTransport) -> None:
    ids = [gmail.add_message(("INBOX", "UNREAD")) for _ in range(2500)]
    await transport.apply_action("read", ids)
    assert [len(m.ids) for m in gmail.modifications] == [1000, 1000, 500]
    assert [i for m in gmail.modifications for i in m.ids] == ids
    assert all((m.add, m.remove) == ([], ["UNREAD"]) for m in gmail.modifications)
    assert all(gmail.labels(i) == {"INBOX"} for i in ids)
    assert {r.status for r in gmail.requests} == {204}


async def test_mailbox_actions_change_labels(gmail: FakeGmail, transport: GmailTransport) -> None:
    assert set(MAILBOX_ACTIONS) == {"read", "unread", "trash", "archive"}
    [sent] = await transport.send_many([message(1)])
    assert sent.provider_id is not None
    received = gmail.add_message(("INBOX",))
    await transport.apply_action("unread", [received])
    assert gmail.labels(received) == {"INBOX", "UNREAD"}
    await transport.apply_action("archive", [received])
    assert gmail.labels(received) == {"UNREAD"}
    await transport.apply_action("trash", [received, sent.provider_id])
    assert gmail.labels(received) == {"UNREAD", "TRASH"}
    assert gmail.labels(sent.provider_id) == {"SENT", "TRASH"}
    assert gmail.requests[-1].json == {
        "ids": [received, sent.provider_id],
        "addLabelIds": ["TRASH"],
        "removeLabelIds": [],
    }
    with pytest.raises(ValueError, match="unknown mailbox action"):
        await transport.apply_action("delete", [received])


async def test_batch_modify_errors(gmail: FakeGmail, transport: GmailTransport) -> None:
    gmail.fail_next(1, 429, "rateLimitExceeded", retry_after=5)
    with pytest.raises(TransientSendError) as info:
        await transport.modify_messages(["18c2f0a1b2c3d4e5"], remove_labels=["UNREAD"])
    assert info.value.retry_after == 5.0
    with pytest.raises(PermanentSendError, match="Invalid label: SENT"):
        await transport.modify_messages(["18c2f0a1b2c3d4e5"], remove_labels=["SENT"])


async def test_fake_refuses_what_gmail_refuses(gmail: FakeGmail) -> None:
    gmail.reset()
    gmail.grant(TOKEN, {MODIFY_SCOPE})
    base = f"{gmail.url}/gmail/v1/users/me/messages"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        too_many = await client.post(f"{base}/batchModify", json={"ids": [str(i) for i in range(1001)]})
        no_raw = await client.post(f"{base}/send", json={})
        big = base64.urlsafe_b64encode(b"To: a@example.com\r\n\r\n" + b"x" * (5 << 20)).decode()
        too_big = await client.post(f"{base}/send", json={"raw": big})
        stranger = await client.post(f"{base}/send", json={"raw": "eA"}, headers={"Authorization": "Bearer nope"})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["errors"][0]["reason"] == "invalidArgument"
    assert no_raw.status_code == 400
    assert too_big.status_code == 400
    assert stranger.status_code == 401
    assert json.loads(stranger.content)["error"]["status"] == "UNAUTHENTICATED"


def test_repr_never_shows_the_token() -> None:
    transport = GmailTransport(api_url="https://gmail.googleapis.com", tokens=Tokens(TOKEN))
    assert TOKEN not in repr(transport)
    assert "gmail.googleapis.com" in repr(transport)
