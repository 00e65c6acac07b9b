import os
from collections.abc import AsyncIterator, Iterator

import pytest

from mailroom.transports.base import (
    MessageContent,
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
    Transport,
)
from mailroom.transports.mime import Attachment
from mailroom.transports.outlook import UPLOAD_CHUNK, OutlookOptions, OutlookTransport
from tests.support.graph_server import FakeGraph, graph_server

MAILBOX = "bob@contoso.com"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class Tokens:
    """The tokens a connected account would hand out: ``issued`` first, then ``fresh`` on refresh."""

    def __init__(self, issued: str, fresh: str | None = None, *, revoked: bool = False) -> None:
        self.current = issued
        self.fresh = fresh
        self.revoked = revoked
        self.refreshes = 0

    async def access_token(self, *, refresh: bool = False) -> str:
        if self.revoked:
            raise PermanentSendError("Microsoft revoked access; reconnect your Outlook account")
        if refresh:
            self.refreshes += 1
            self.current = self.fresh or self.current
        return self.current


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    with graph_server(access_token="tok-1", address=MAILBOX) as server:
        yield server


@pytest.fixture
async def transport(graph: FakeGraph) -> AsyncIterator[OutlookTransport]:
    graph.reset()
    graph.access_token = "tok-1"
    client = OutlookTransport(graph_url=graph.url, tokens=Tokens("tok-1"))
    yield client
    await client.aclose()


def outgoing(
    key: str,
    *,
    to: tuple[str, ...] = ("Ann Lee <ann@example.com>",),
    attachments: tuple[Attachment, ...] = (),
    reply_to_id: str | None = None,
    headers: dict[str, str] | None = None,
    subject: str | None = None,
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
) -> OutgoingMessage:
    content = MessageContent(
        from_addr=f"Bob Ray <{MAILBOX}>",
        subject=subject or f"Hello {key}",
        html=f"<p>Hi from {key}</p>",
        text=f"Hi from {key}",
        to=to,
        cc=cc,
        bcc=bcc,
        attachments=attachments,
        headers=headers or {},
    )
    return OutgoingMessage(
        key=key,
        envelope_from=MAILBOX,
        recipients=(),
        message=b"",
        content=content,
        options=OutlookOptions(reply_to_id=reply_to_id),
    )


async def test_new_message_arrives_with_fields_and_attachments(graph: FakeGraph, transport: OutlookTransport) -> None:
    assert isinstance(transport, Transport)
    logo = Attachment("logo.png", "image/png", PNG, content_id="logo")
    pdf = Attachment("Résumé.pdf", "application/pdf", b"%PDF-1.7 data")
    message = outgoing(
        "row-1",
        cc=("Cy <cy@example.com>",),
        bcc=("hidden@example.com",),
        attachments=(logo, pdf),
        headers={
            "X-Campaign": "c-9",
            "List-Unsubscribe": "<https://u.example/1>",
            "Reply-To": "Help <help@contoso.com>",
        },
    )
    [result] = await transport.send_many([message])
    [sent] = graph.sent
    assert (result.key, result.provider_id, result.error) == ("row-1", sent.id, None)
    assert sent.subject == "Hello row-1"
    assert sent.body == {"contentType": "html", "content": "<p>Hi from row-1</p>"}
    assert sent.to_recipients == [{"emailAddress": {"address": "ann@example.com", "name": "Ann Lee"}}]
    assert (sent.cc, sent.bcc) == (["cy@example.com"], ["hidden@example.com"])
    assert sent.reply_to == [{"emailAddress": {"address": "help@contoso.com", "name": "Help"}}]
    assert sent.sender == {"emailAddress": {"address": MAILBOX, "name": "Bob Ray"}}
    assert (sent.folder, sent.is_draft) == ("sentitems", False)
    # Only x- headers reach Graph: it refuses the others.
    assert sent.headers == [{"name": "X-Campaign", "value": "c-9"}]
    inline, attached = sent.attachments
    assert (inline.name, inline.content_type, inline.data) == ("logo.png", "image/png", PNG)
    assert (inline.content_id, inline.is_inline) == ("logo", True)
    assert (attached.name, attached.data, attached.is_inline) == ("Résumé.pdf", b"%PDF-1.7 data", False)
    # One create (attachments inside) and one send, each asking for ids that survive the send.
    assert [(r.method, r.path) for r in graph.requests] == [
        ("POST", "/me/messages"),
        ("POST", f"/me/messages/{sent.id}/send"),
    ]
    assert all(r.headers["prefer"] == 'IdType="ImmutableId"' for r in graph.requests)
    assert graph.drafts() == []


async def test_large_attachment_goes_through_an_upload_session(graph: FakeGraph, transport: OutlookTransport) -> None:
    big = os.urandom(4 * 1024 * 1024)
    message = outgoing("row-2", attachments=(Attachment("big.bin", "application/octet-stream", big),))
    [result] = await transport.send_many([message])
    [sent] = graph.sent
    assert result.provider_id == sent.id
    [attachment] = sent.attachments
    assert (attachment.name, attachment.content_type, attachment.is_inline) == (
        "big.bin",
        "application/octet-stream",
        False,
    )
    assert attachment.data == big
    puts = [r for r in graph.requests if r.method == "PUT"]
    assert [int(r.headers["content-length"]) for r in puts] == [UPLOAD_CHUNK, len(big) - UPLOAD_CHUNK]
    assert UPLOAD_CHUNK % (320 * 1024) == 0
    assert puts[0].headers["content-range"] == f"bytes 0-{UPLOAD_CHUNK - 1}/{len(big)}"
    assert all("authorization" not in r.headers for r in puts)  # the upload URL is pre-authenticated
    # The create request itself stayed small: the file was not in it.
    create = graph.requests[0]
    assert (create.path, create.body.get("attachments")) == ("/me/messages", None)


async def test_reply_goes_through_create_reply(graph: FakeGraph, transport: OutlookTransport) -> None:
    original = graph.seed(subject="Question about pricing", sender="ann@example.com", conversation_id="conv-7")
    message = outgoing(
        "row-3",
        subject="Re: Question about pricing",
        reply_to_id=original.id,
        attachments=(Attachment("quote.txt", "text/plain", b"42 EUR"),),
        headers={"X-Campaign": "c-9"},
    )
    [result] = await transport.send_many([message])
    [sent] = graph.sent
    assert result.provider_id == sent.id != original.id
    assert (sent.reply_to_message, sent.conversation_id) == (original.id, "conv-7")
    assert sent.subject == "Re: Question about pricing"
    assert sent.body["content"] == "<p>Hi from row-3</p>"
    assert sent.to == ["ann@example.com"]
    assert sent.header("X-Campaign") == "c-9"
    assert [(a.name, a.data) for a in sent.attachments] == [("quote.txt", b"42 EUR")]
    assert [(r.method, r.path.removeprefix(f"/me/messages/{original.id}")) for r in graph.requests][:1] == [
        ("POST", "/createReply")
    ]
    assert graph.drafts() == []


async def test_reply_to_a_deleted_message_fails_that_message(graph: FakeGraph, transport: OutlookTransport) -> None:
    results = await transport.send_many([outgoing("row-4", reply_to_id="AAMkAD-gone="), outgoing("row-5")])
    assert (results[0].provider_id, results[0].permanent) == (None, True)
    assert results[0].error == "the message replied to no longer exists in the mailbox"
    assert results[1].provider_id == graph.sent[0].id
    assert graph.drafts() == []


async def test_invalid_recipient_fails_that_message(graph: FakeGraph, transport: OutlookTransport) -> None:
    graph.fail_next(1, 400, code="ErrorInvalidRecipients", message="At least one recipient isn't valid.", path="/send")
    results = await transport.send_many([outgoing("row-6"), outgoing("row-7")])
    # The two go out at once: the refusal meets whichever reaches /send first, and only that one fails.
    (refused,) = [r for r in results if not r.accepted]
    (accepted,) = [r for r in results if r.accepted]
    assert refused.provider_id is None and refused.permanent
    assert "ErrorInvalidRecipients" in (refused.error or "")
    assert {refused.key, accepted.key} == {"row-6", "row-7"}
    assert len(graph.sent) == 1
    assert graph.drafts() == []  # the refused draft was deleted


async def test_401_refreshes_the_token_and_retries(graph: FakeGraph) -> None:
    graph.reset()
    graph.access_token = "tok-2"  # the token the transport holds has expired
    tokens = Tokens("tok-1", fresh="tok-2")
    transport = OutlookTransport(graph_url=graph.url, tokens=tokens)
    try:
        [result] = await transport.send_many([outgoing("row-8")])
    finally:
        await transport.aclose()
    assert result.accepted and tokens.refreshes == 1
    assert [r.status for r in graph.requests] == [401, 201, 202]
    assert graph.requests[0].headers["authorization"] == "Bearer tok-1"
    assert graph.requests[1].headers["authorization"] == "Bearer tok-2"
    assert "tok-" not in repr(transport)


async def test_revoked_account_fails_the_call(graph: FakeGraph) -> None:
    graph.reset()
    transport = OutlookTransport(graph_url=graph.url, tokens=Tokens("tok-1", revoked=True))
    with pytest.raises(PermanentSendError, match="reconnect your Outlook account"):
        await transport.send_many([outgoing("row-9")])
    await transport.aclose()
    assert graph.requests == []


async def test_throttling_is_transient_with_retry_after(graph: FakeGraph, transport: OutlookTransport) -> None:
    graph.fail_next(1, 429, code="ApplicationThrottled", message="Application is over its MailboxConcurrency limit.",
                    retry_after=17)  # fmt: skip
    with pytest.raises(TransientSendError) as caught:
        await transport.send_many([outgoing("row-10")])
    assert caught.value.retry_after == 17
    assert "ApplicationThrottled" in caught.value.reason
    assert graph.sent == [] and len(graph.requests) == 1


async def test_throttled_send_leaves_no_draft(graph: FakeGraph, transport: OutlookTransport) -> None:
    graph.fail_next(1, 503, code="ServiceNotAvailable", retry_after=5, path="/send")
    with pytest.raises(TransientSendError) as caught:
        await transport.send_many([outgoing("row-12")])
    assert caught.value.retry_after == 5
    assert graph.sent == [] and graph.drafts() == []
    assert graph.requests[-1].method == "DELETE"


async def test_server_error_at_send_is_retried_on_the_same_draft(graph: FakeGraph, transport: OutlookTransport) -> None:
    graph.fail_next(1, 500, path="/send")
    [result] = await transport.send_many([outgoing("row-13")])
    [sent] = graph.sent
    assert result.provider_id == sent.id
    assert [r.method for r in graph.requests] == ["POST", "POST", "POST"]  # create, send (500), send
    assert graph.drafts() == []


async def test_access_denied_names_the_permission(graph: FakeGraph, transport: OutlookTransport) -> None:
    graph.fail_next(1, 403, code="ErrorAccessDenied", message="Access is denied. Check credentials and try again.")
    with pytest.raises(PermanentSendError, match=r"mail\.send") as caught:
        await transport.send_many([outgoing("row-14")])
    assert "ErrorAccessDenied" in caught.value.reason


async def test_mark_read_and_move_go_in_batches_of_20(graph: FakeGraph, transport: OutlookTransport) -> None:
    ids = [graph.seed(subject=f"m{n}", sender="ann@example.com").id for n in range(45)]
    await transport.mark_read(ids, read=True)
    assert graph.batch_sizes == [20, 20, 5]
    assert all(graph.messages[i].is_read for i in ids)
    await transport.mark_read(ids[:3], read=False)
    assert [graph.messages[i].is_read for i in ids[:4]] == [False, False, False, True]

    graph.batch_sizes.clear()
    await transport.move(ids, destination="deleteditems")
    assert graph.batch_sizes == [20, 20, 5]
    assert {graph.messages[i].folder for i in ids} == {"deleteditems"}
    with pytest.raises(ValueError, match="destination"):
        await transport.move(ids, destination="inbox")


async def test_batch_retries_throttled_items_and_skips_gone_ones(graph: FakeGraph, transport: OutlookTransport) -> None:
    ids = [graph.seed(subject=f"m{n}", sender="ann@example.com").id for n in range(3)]
    graph.fail_next(2, 429, code="ApplicationThrottled", retry_after=1, in_batch=True)
    await transport.move([*ids, "AAMkAD-gone="], destination="archive")
    assert graph.batch_sizes == [4, 2]  # the two throttled items went again
    assert {graph.messages[i].folder for i in ids} == {"archive"}


async def test_batch_throttled_too_long_is_transient(graph: FakeGraph, transport: OutlookTransport) -> None:
    [message] = [graph.seed(subject="m", sender="ann@example.com")]
    graph.fail_next(1, 429, code="ApplicationThrottled", retry_after=120, in_batch=True)
    with pytest.raises(TransientSendError) as caught:
        await transport.mark_read([message.id], read=True)
    assert caught.value.retry_after == 120
    assert not message.is_read


async def test_batch_access_denied_names_mail_modify(graph: FakeGraph, transport: OutlookTransport) -> None:
    [message] = [graph.seed(subject="m", sender="ann@example.com")]
    graph.fail_next(1, 403, code="ErrorAccessDenied", message="Access is denied.", in_batch=True)
    with pytest.raises(PermanentSendError, match=r"mail\.modify"):
        await transport.mark_read([message.id], read=True)


async def test_text_only_and_unreadable_address(graph: FakeGraph, transport: OutlookTransport) -> None:
    text_only = OutgoingMessage(
        key="row-15",
        envelope_from=MAILBOX,
        recipients=(),
        message=b"",
        content=MessageContent(from_addr=MAILBOX, subject="Plain", html=None, text="Just text", to=["ann@example.com"]),
    )
    results = await transport.send_many([text_only, outgoing("row-16", to=("not an address",))])
    assert results[0].accepted
    assert graph.sent[0].body == {"contentType": "text", "content": "Just text"}
    assert (results[1].provider_id, results[1].permanent) == (None, True)
    assert "not an address" in (results[1].error or "")
    assert len(graph.requests) == 2  # the unreadable one never reached Graph
