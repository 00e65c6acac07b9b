import json
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from mailroom.transports.base import (
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
    Transport,
    send_one,
)
from mailroom.transports.mailgun import (
    MailgunTransport,
    TemplateRecipient,
    TemplateSend,
)
from mailroom.transports.mime import Attachment, build_message, make_message_id
from tests.support.mailgun_server import FakeMailgun, mailgun_server

KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DOMAIN = "mg.example.com"


@pytest.fixture(scope="module")
def mailgun() -> Iterator[FakeMailgun]:
    with mailgun_server(api_key=KEY, domains={DOMAIN}) as server:
        yield server


@pytest.fixture
async def transport(mailgun: FakeMailgun) -> AsyncIterator[MailgunTransport]:
    mailgun.reset()
    client = MailgunTransport(mailgun.url, KEY, DOMAIN, concurrency=1)
    yield client
    await client.aclose()


def mime_message(n: int, bcc: tuple[str, ...] = ()) -> OutgoingMessage:
    raw = build_message(
        from_addr=f"Bob Ray <bob@{DOMAIN}>",
        to=[f"User {n} <user{n}@example.com>"],
        cc=[],
        subject=f"Hello {n}",
        text=f"Hi {n}",
        html=f"<p>Hi {n}</p>",
        message_id=make_message_id(f"row-{n}", DOMAIN),
        date=1_700_000_000.0,
        headers={},
        inline=[],
        attachments=[],
    )
    return OutgoingMessage(
        key=f"row-{n}",
        envelope_from=f"bob@{DOMAIN}",
        recipients=(f"user{n}@example.com", *bcc),
        message=raw,
        tags=("brand-1", "campaign-9"),
        variables={"email_campaign_email": f"row-{n}"},
    )


async def test_send_many_posts_each_message_as_mime(mailgun: FakeMailgun, transport: MailgunTransport) -> None:
    assert isinstance(transport, Transport)
    sent = [mime_message(1, bcc=("hidden@example.com",)), mime_message(2)]
    results = await transport.send_many(sent)
    assert [r.key for r in results] == ["row-1", "row-2"]
    assert [r.provider_id for r in results] == [
        f"20240101000000.1.abc@{DOMAIN}",  # Mailgun's id, brackets dropped as in its events
        f"20240101000000.2.abc@{DOMAIN}",
    ]
    assert all(r.error is None for r in results)
    first, second = mailgun.requests
    assert (first.domain, first.endpoint, first.status) == (DOMAIN, "messages.mime", 200)
    assert first.content_type.startswith("multipart/form-data")
    assert first.fields["to"] == ["user1@example.com", "hidden@example.com"]
    assert first.fields["o:tag"] == ["brand-1", "campaign-9"]
    assert first.field("v:email_campaign_email") == "row-1"
    [upload] = first.files["message"]
    assert upload.data == sent[0].message
    assert first.mime is not None
    assert first.mime["Subject"] == "Hello 1"
    assert first.mime["Message-ID"] == f"<row-1@{DOMAIN}>"
    assert first.mime["Bcc"] is None
    assert second.fields["to"] == ["user2@example.com"]
    assert second.field("v:email_campaign_email") == "row-2"


async def test_send_template_is_one_call(mailgun: FakeMailgun, transport: MailgunTransport) -> None:
    recipients = [
        TemplateRecipient("row-1", "Ann Lee <ann@example.com>", {"first_name": "Ann", "id": 1}),
        TemplateRecipient("row-2", "bo@example.com", {"first_name": "Bö"}),
        TemplateRecipient("row-3", "cy@example.com", {}),
        TemplateRecipient("row-4", "Lee, Dee <dee@example.com>", {"first_name": "Dee"}),
    ]
    batch = TemplateSend(
        from_addr=f"Bob Ray <bob@{DOMAIN}>",
        subject="Hi %recipient.first_name%",
        html="<p>Hello %recipient.first_name%</p>",
        text="Hello %recipient.first_name%",
        recipients=recipients,
        headers={"Feedback-ID": "rechat:b1:rechat", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        tags=["brand-1", "campaign-9", "spring"],
        variables={"campaign": "campaign-9"},
        inline=[Attachment("logo.png", "image/png", b"\x89PNG-logo", "logo")],
        attachments=[Attachment("Résumé.pdf", "application/pdf", b"%PDF-1.7 data")],
    )
    results = await transport.send_template(batch)
    assert [(r.key, r.provider_id, r.error) for r in results] == [
        (f"row-{n}", f"20240101000000.1.abc@{DOMAIN}", None) for n in (1, 2, 3, 4)
    ]
    [request] = mailgun.requests
    assert (request.endpoint, request.status) == ("messages", 200)
    assert request.field("from") == f"Bob Ray <bob@{DOMAIN}>"
    assert request.fields["to"] == [
        "Ann Lee <ann@example.com>",
        "bo@example.com",
        "cy@example.com",
        '"Lee, Dee" <dee@example.com>',  # quoted: Mailgun splits `to` at commas
    ]
    assert request.field("subject") == "Hi %recipient.first_name%"
    assert request.field("html") == "<p>Hello %recipient.first_name%</p>"
    assert request.field("text") == "Hello %recipient.first_name%"
    assert request.fields["o:tag"] == ["brand-1", "campaign-9", "spring"]
    assert request.field("h:Feedback-ID") == "rechat:b1:rechat"
    assert request.field("h:List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert request.field("v:campaign") == "campaign-9"
    assert json.loads(request.field("recipient-variables")) == {
        "ann@example.com": {"first_name": "Ann", "id": 1},
        "bo@example.com": {"first_name": "Bö"},
        "cy@example.com": {},
        "dee@example.com": {"first_name": "Dee"},
    }
    [inline] = request.files["inline"]
    assert (inline.filename, inline.content_type, inline.data) == ("logo", "image/png", b"\x89PNG-logo")
    [attachment] = request.files["attachment"]
    assert (attachment.filename, attachment.content_type) == ("Résumé.pdf", "application/pdf")
    assert attachment.data == b"%PDF-1.7 data"


async def test_template_send_limits(transport: MailgunTransport) -> None:
    def batch(addresses: list[str]) -> TemplateSend:
        recipients = [TemplateRecipient(f"k{i}", a) for i, a in enumerate(addresses)]
        return TemplateSend(from_addr="a@x.com", subject="s", html=None, text="t", recipients=recipients)

    with pytest.raises(ValueError, match="1 to 1000"):
        await transport.send_template(batch([f"u{i}@example.com" for i in range(1001)]))
    with pytest.raises(ValueError, match="1 to 1000"):
        await transport.send_template(batch([]))
    with pytest.raises(ValueError, match="twice"):
        await transport.send_template(batch(["a@example.com", "Ann <A@example.com>"]))


async def test_full_batch_of_1000_recipients(mailgun: FakeMailgun, transport: MailgunTransport) -> None:
    recipients = [TemplateRecipient(f"k{i}", f"u{i}@example.com", {"n": i}) for i in range(1000)]
    batch = TemplateSend(from_addr="a@x.com", subject="s", html=None, text="%recipient.n%", recipients=recipients)
    results = await transport.send_template(batch)
    assert len(results) == 1000 and all(r.accepted for r in results)
    [request] = mailgun.requests
    assert len(request.fields["to"]) == 1000
    assert json.loads(request.field("recipient-variables"))["u999@example.com"] == {"n": 999}


async def test_429_raises_transient_with_retry_after(mailgun: FakeMailgun, transport: MailgunTransport) -> None:
    mailgun.fail_next(1, 429, {"message": "Too many requests"}, {"Retry-After": "7"})
    with pytest.raises(TransientSendError) as info:
        await transport.send_many([mime_message(1), mime_message(2), mime_message(3)])
    assert info.value.retry_after == 7.0
    assert info.value.reason == "Mailgun answered 429: Too many requests"
    assert len(mailgun.requests) == 1  # the rest of the call waited instead of hammering


async def test_5xx_after_some_accepted_marks_the_rest_transient(
    mailgun: FakeMailgun, transport: MailgunTransport
) -> None:
    mailgun.fail_next(1, 503, {"message": "Service unavailable"}, after=1)
    ok, failed, skipped = await transport.send_many([mime_message(1), mime_message(2), mime_message(3)])
    assert ok.accepted
    assert (failed.provider_id, failed.permanent, failed.error) == (
        None,
        False,
        "Mailgun answered 503: Service unavailable",
    )
    assert (skipped.provider_id, skipped.permanent) == (None, False)
    assert [r.status for r in mailgun.requests] == [200, 503]


async def test_400_is_permanent_for_that_message_only(mailgun: FakeMailgun, transport: MailgunTransport) -> None:
    bad = OutgoingMessage("row-x", "bob@x.com", (), mime_message(9).message)  # no recipient at all
    first, refused, last = await transport.send_many([mime_message(1), bad, mime_message(2)])
    assert first.accepted and last.accepted
    assert (refused.provider_id, refused.permanent) == (None, True)
    assert refused.error == "Mailgun answered 400: 'to' parameter is missing"

    mailgun.fail_next(1, 400, {"message": "to parameter is not a valid address. please check documentation"})
    recipients = [TemplateRecipient("k1", "a@example.com"), TemplateRecipient("k2", "b@example.com")]
    batch = TemplateSend(from_addr="a@x.com", subject="s", html="<p>h</p>", text=None, recipients=recipients)
    results = await transport.send_template(batch)
    assert [(r.key, r.provider_id, r.permanent) for r in results] == [("k1", None, True), ("k2", None, True)]
    assert all("not a valid address" in (r.error or "") for r in results)


async def test_template_send_errors_raise(mailgun: FakeMailgun, transport: MailgunTransport) -> None:
    batch = TemplateSend(
        from_addr="a@x.com", subject="s", html=None, text="t", recipients=[TemplateRecipient("k", "a@example.com")]
    )
    mailgun.fail_next(1, 500, {"message": "Internal error"})
    with pytest.raises(TransientSendError, match="500"):
        await transport.send_template(batch)
    mailgun.fail_next(1, 429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    with pytest.raises(TransientSendError) as info:
        await transport.send_template(batch)
    assert info.value.retry_after == 0.0  # a date in the past: retry now


async def test_bad_key_and_unknown_domain_are_permanent(mailgun: FakeMailgun) -> None:
    wrong_key = MailgunTransport(mailgun.url, "key-wrong", DOMAIN)
    with pytest.raises(PermanentSendError, match="refused the API key"):
        await wrong_key.send_many([mime_message(1), mime_message(2)])
    await wrong_key.aclose()

    wrong_domain = MailgunTransport(mailgun.url + "/v3/", KEY, "other.example.com")
    with pytest.raises(PermanentSendError, match=r"does not know the sending domain other\.example\.com"):
        await send_one(wrong_domain, OutgoingMessage("k", "a@x.com", ["b@example.com"], b"Subject: x\r\n\r\nx"))
    await wrong_domain.aclose()


async def test_timeouts_and_refused_connections_are_transient(mailgun: FakeMailgun) -> None:
    mailgun.reset()
    async with httpx.AsyncClient(timeout=0.2) as client:
        impatient = MailgunTransport(mailgun.url, KEY, DOMAIN, client)
        mailgun.fail_next(1, 200, delay=0.6)
        with pytest.raises(TransientSendError, match="did not answer in time"):
            await impatient.send_many([mime_message(1)])
        await impatient.aclose()
        assert not client.is_closed  # a client passed in belongs to the caller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nowhere = MailgunTransport(f"http://127.0.0.1:{port}", KEY, DOMAIN)
    with pytest.raises(TransientSendError, match="cannot reach Mailgun"):
        await nowhere.send_many([mime_message(1)])
    await nowhere.aclose()


async def test_send_single_message(mailgun: FakeMailgun, transport: MailgunTransport) -> None:
    raw = mime_message(5).message
    assert isinstance(raw, bytes)
    result = await send_one(transport, OutgoingMessage("k5", "bob@x.com", ["user5@example.com"], raw))
    assert (result.key, result.provider_id) == ("k5", f"20240101000000.1.abc@{DOMAIN}")
    assert mailgun.requests[0].fields["to"] == ["user5@example.com"]
    assert "key-3ax6" not in repr(transport)
