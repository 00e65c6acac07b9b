"""Outlook mailboxes through Microsoft Graph v1.0, acting as the connected user (``/me``).

Sending one message:

* new: ``POST /me/messages`` creates a draft holding subject, body, recipients, custom headers
  and the attachments that fit in that request; ``OutlookOptions.reply_to_id`` set: ``POST
  /me/messages/{id}/createReply`` makes a draft in the replied-to conversation, then ``PATCH``
  sets its subject, body and recipients;
* the other attachments are added to the draft: under 3 MB with one ``POST .../attachments``,
  larger ones through an upload session (``createUploadSession``, then ``PUT`` of byte ranges
  to the pre-authenticated upload URL);
* ``POST /me/messages/{id}/send`` (202). The draft's id is the provider id: every request asks
  for immutable ids (``Prefer: IdType="ImmutableId"``), so the Sent Items copy keeps that id and
  later replies, moves and read marks can use it.

A draft whose send Graph refused (an error status, so nothing left) is deleted before the message
is reported unsent, so retries do not pile drafts up in the mailbox; a 5xx at the send step is
retried once on the same draft first. A send that timed out is not deleted: it may have gone.

Errors: 401 -> ask the token source for a fresh token and retry once; 429 and 5xx are
transient (``Retry-After`` passed on) and stop the rest of the call; 403 fails the call
permanently, naming the permission missing; other 4xx (invalid recipients, the replied-to
message deleted) fail that message only. Mailbox actions (``mark_read``, ``move``) go through
JSON batching, 20 requests per ``$batch`` as Graph allows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from mailroom.transports.base import (
    MAILBOX_SIZE_LIMIT,
    Capabilities,
    HeldToken,
    MessageContent,
    OutgoingMessage,
    PermanentSendError,
    RouteOptions,
    SendError,
    SendResult,
    TokenSource,
    TransientSendError,
    settle,
)
from mailroom.transports.mime import Attachment, parse_address
from mailroom.transports.responses import retry_after, retry_after_seconds

BATCH_LIMIT = 20  # requests per JSON batch, Graph's limit
MOVE_DESTINATIONS = frozenset({"deleteditems", "archive"})
# Graph takes a file under 3 MB in one request; larger ones need an upload session.
UPLOAD_SESSION_AT = 3 * 1024 * 1024
# Attachments sent inside the create request, in total: base64 grows them by a third and Graph
# refuses requests over 4 MB.
_CREATE_BUDGET = 2 * 1024 * 1024
# Upload ranges must be multiples of 320 KiB and at most 4 MB each.
UPLOAD_CHUNK = 10 * 320 * 1024
# Graph allows 4 concurrent requests per mailbox and app.
_CONCURRENCY = 4
_BATCH_ROUNDS = 4  # throttled batch items are retried this many times within one call
_MAX_BATCH_WAIT = 30.0  # longer Retry-After waits end the call instead
_PREFER = {"Prefer": 'IdType="ImmutableId"'}
_RETRY_STATUSES = frozenset({429, 503, 504})

_Request = tuple[str, str, dict[str, Any]]  # method, path under /v1.0, JSON body


@dataclass(frozen=True, slots=True)
class OutlookOptions(RouteOptions):
    """What a message sent through Outlook carries besides itself."""

    # The provider id of the message this one answers (the campaign's headers.message_id).
    reply_to_id: str | None = None


class _Refused(Exception):
    """Graph refused this one message; retrying it cannot help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutlookTransport:
    """See the module docstring and ``mailroom.transports.base`` for the contract."""

    name = "outlook"
    # Exchange Online takes at most 500 recipients (To, Cc and Bcc together) per message.
    capabilities = Capabilities(
        max_recipients_per_call=500, size_limit=MAILBOX_SIZE_LIMIT, builds_from_fields=True, mailbox=True
    )

    def __init__(
        self,
        *,
        graph_url: str,
        tokens: TokenSource,
        client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._base = graph_url.rstrip("/").removesuffix("/v1.0") + "/v1.0"
        self._token = HeldToken(tokens)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._slots = asyncio.Semaphore(_CONCURRENCY)

    def __repr__(self) -> str:  # never show the token
        return f"OutlookTransport({self._base!r})"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- sending ------------------------------------------------------------------------------

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        abort: list[SendError] = []

        async def one(msg: OutgoingMessage) -> SendResult | SendError:
            async with self._slots:
                if abort:  # an earlier message of this call was throttled or refused as a whole
                    return abort[0]
                try:
                    return await self._send(msg)
                except _Refused as exc:
                    return SendResult(msg.key, None, exc.reason, True)
                except SendError as exc:
                    abort.append(exc)
                    return exc

        outcomes = await asyncio.gather(*(one(m) for m in messages))
        return settle(messages, outcomes)

    async def _send(self, msg: OutgoingMessage) -> SendResult:
        content = msg.content
        if content is None:
            raise _Refused("the message has no fields for Outlook (content missing)")
        try:
            fields = _message_fields(content)
        except ValueError as exc:  # an address that is not one
            raise _Refused(str(exc)) from None
        # Graph tells inline parts by their contentId; the others are plain attachments.
        files = [*content.inline, *content.attachments]
        inline, later = _split_attachments(files)
        draft_id: str | None = None
        sending = False
        try:
            options = msg.options if isinstance(msg.options, OutlookOptions) else None
            if options and options.reply_to_id:
                draft_id = await self._create_reply(options.reply_to_id, content)
                later = files
                await self._json("PATCH", f"/me/messages/{_seg(draft_id)}", fields, scope="mail.send")
            else:
                body = {**fields, **_custom_headers(content.headers)}
                if inline:
                    body["attachments"] = [_file_attachment(a) for a in inline]
                created = await self._json("POST", "/me/messages", body, scope="mail.send")
                draft_id = str(created.get("id") or "")
                if not draft_id:
                    raise TransientSendError("Outlook created the message without an id")
            for attachment in later:
                await self._attach(draft_id, attachment)
            sending = True
            await self._send_draft(draft_id)
        except (_Refused, SendError) as exc:
            # Unless the send itself went unanswered (it may have gone), Graph kept nothing sent.
            if draft_id and not (sending and isinstance(exc, _SendTimedOut)):
                await self._discard(draft_id)
            raise
        return SendResult(msg.key, draft_id)

    async def _create_reply(self, message_id: str, content: MessageContent) -> str:
        # Graph takes custom headers only when the item is created, so they go with createReply.
        headers = _custom_headers(content.headers)
        body = {"message": headers} if headers else {}
        try:
            draft = await self._json(
                "POST", f"/me/messages/{_seg(message_id)}/createReply", body, scope="mail.send", gone=True
            )
        except _Gone:
            raise _Refused("the message replied to no longer exists in the mailbox") from None
        draft_id = str(draft.get("id") or "")
        if not draft_id:
            raise TransientSendError("Outlook created the reply without an id")
        return draft_id

    async def _send_draft(self, draft_id: str) -> None:
        path = f"/me/messages/{_seg(draft_id)}/send"
        try:
            await self._json("POST", path, None, scope="mail.send")
        except TransientSendError as exc:
            if exc.retry_after is not None or isinstance(exc, _SendTimedOut):
                raise
            # A 5xx without Retry-After is often momentary: the draft is complete, send it again.
            await self._json("POST", path, None, scope="mail.send")

    async def _discard(self, draft_id: str) -> None:
        # Should this fail too, the draft stays; the message is reported unsent either way.
        with contextlib.suppress(SendError, _Refused, _Gone):
            await self._json("DELETE", f"/me/messages/{_seg(draft_id)}", None, scope="mail.send", gone=True)

    async def _attach(self, draft_id: str, attachment: Attachment) -> None:
        base = f"/me/messages/{_seg(draft_id)}/attachments"
        if len(attachment.data) < UPLOAD_SESSION_AT:
            await self._json("POST", base, _file_attachment(attachment), scope="mail.send")
            return
        item: dict[str, Any] = {
            "attachmentType": "file",
            "name": attachment.filename,
            "size": len(attachment.data),
            "contentType": attachment.content_type,
            "isInline": attachment.content_id is not None,
        }
        if attachment.content_id:
            item["contentId"] = attachment.content_id
        session = await self._json("POST", f"{base}/createUploadSession", {"AttachmentItem": item}, scope="mail.send")
        upload_url = str(session.get("uploadUrl") or "")
        if not upload_url:
            raise TransientSendError("Outlook opened an upload session without an upload URL")
        data, total = attachment.data, len(attachment.data)
        for start in range(0, total, UPLOAD_CHUNK):
            chunk = data[start : start + UPLOAD_CHUNK]
            # The upload URL carries its own authorization: Graph refuses a bearer token on it.
            headers = {"Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{total}"}
            response = await self._raw("PUT", upload_url, content=chunk, headers=headers)
            if response.status_code not in (200, 201):
                raise _error(response, scope="mail.send")

    # -- mailbox actions ------------------------------------------------------------------------

    async def mark_read(self, message_ids: Sequence[str], *, read: bool) -> None:
        """Mark the messages read (or unread); ids no longer in the mailbox are skipped."""
        await self._batch([("PATCH", f"/me/messages/{_seg(i)}", {"isRead": read}) for i in message_ids])

    async def move(self, message_ids: Sequence[str], *, destination: str) -> None:
        """Move the messages to ``deleteditems`` or ``archive``; ids no longer there are skipped."""
        if destination not in MOVE_DESTINATIONS:
            raise ValueError(f"destination must be one of {sorted(MOVE_DESTINATIONS)}, not {destination!r}")
        body = {"destinationId": destination}
        await self._batch([("POST", f"/me/messages/{_seg(i)}/move", body) for i in message_ids])

    async def _batch(self, requests: Sequence[_Request]) -> None:
        for group in _chunks(requests, BATCH_LIMIT):
            pending = dict(enumerate(group, start=1))
            for round_ in range(_BATCH_ROUNDS + 1):
                waits = await self._batch_round(pending)
                if not pending:
                    break
                wait = max(waits, default=1.0)
                if round_ == _BATCH_ROUNDS or wait > _MAX_BATCH_WAIT:
                    raise TransientSendError(
                        f"Outlook kept throttling {len(pending)} mailbox actions", retry_after=wait
                    )
                await asyncio.sleep(wait)

    async def _batch_round(self, pending: dict[int, _Request]) -> list[float]:
        """Send the pending requests as one batch; drop those done or gone; the waits Graph asked for."""
        body = {
            "requests": [
                {
                    "id": str(n),
                    "method": method,
                    "url": url,
                    "body": payload,
                    "headers": {"Content-Type": "application/json", **_PREFER},
                }
                for n, (method, url, payload) in pending.items()
            ]
        }
        answer = await self._json("POST", "/$batch", body, scope="mail.modify")
        waits: list[float] = []
        for item in answer.get("responses") or []:
            try:
                n = int(item.get("id"))
            except (TypeError, ValueError):
                continue
            status = int(item.get("status") or 0)
            if 200 <= status < 300 or status in (400, 404):
                # 404: the message is gone; 400: an id Graph cannot read. Nothing to act on either way.
                pending.pop(n, None)
            elif status == 401:
                await self._token.get(refused=self._token.token)  # the next round goes with a fresh token
                waits.append(0.0)
            elif status == 403:
                raise PermanentSendError(_scope_reason("mail.modify", _item_error(item)))
            else:
                headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
                waits.append(retry_after_seconds(headers.get("retry-after")) or 1.0)
        return waits

    # -- HTTP ---------------------------------------------------------------------------------

    async def _json(self, method: str, path: str, body: Any, *, scope: str, gone: bool = False) -> dict[str, Any]:
        """One Graph request with the bearer token (refreshed once on 401); the JSON answer."""
        token = await self._token.get()
        for attempt in (0, 1):
            headers = {"Authorization": f"Bearer {token}", **_PREFER}
            response = await self._raw(method, self._base + path, json=body, headers=headers)
            if response.status_code != 401 or attempt:
                break
            token = await self._token.get(refused=token)
        status = response.status_code
        if 200 <= status < 300:
            return _json_body(response)
        if status == 404 and gone:
            raise _Gone()
        if status == 401:
            raise PermanentSendError("Outlook refused a fresh access token; reconnect the Outlook account")
        raise _error(response, scope=scope)

    async def _raw(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise _SendTimedOut(f"Outlook did not answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientSendError(f"cannot reach Outlook: {exc}") from None


class _Gone(Exception):
    """Graph answered 404 where the caller expects that the item may have been deleted."""


class _SendTimedOut(TransientSendError):
    """No answer: the request may have taken effect."""


def _error(response: httpx.Response, *, scope: str) -> SendError | _Refused:
    status = response.status_code
    code, message = graph_error(response)
    reason = f"Outlook answered {status} {code}: {message}" if code else f"Outlook answered {status}: {message}"
    if status in _RETRY_STATUSES or status >= 500:
        return TransientSendError(reason, retry_after=retry_after(response))
    if code == "MailboxNotEnabledForRESTAPI":
        return PermanentSendError(f"this Microsoft account has no Exchange Online mailbox to send from ({message})")
    if status == 403:
        if code == "ErrorSendAsDenied":
            return _Refused(f"the Outlook mailbox may not send as this From address ({message})")
        return PermanentSendError(_scope_reason(scope, f"{code}: {message}" if code else message))
    return _Refused(reason)


def _scope_reason(scope: str, detail: str) -> str:
    return f"the Outlook account did not grant the {scope} permission; reconnect it ({detail})"


def _item_error(item: Mapping[str, Any]) -> str:
    body = item.get("body")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code', '')}: {error.get('message', '')}"
    return f"status {item.get('status')}"


def _json_body(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _message_fields(content: MessageContent) -> dict[str, Any]:
    # No "from": the connected mailbox is the sender, and another From would need send-as rights.
    fields: dict[str, Any] = {
        "subject": content.subject,
        "body": {"contentType": "HTML", "content": content.html}
        if content.html is not None
        else {"contentType": "Text", "content": content.text},
        "toRecipients": _recipients(content.to),
        "ccRecipients": _recipients(content.cc),
        "bccRecipients": _recipients(content.bcc),
    }
    reply_to = next((v for k, v in content.headers.items() if k.lower() == "reply-to"), None)
    if reply_to:
        # Reply-To is a message property in Graph, not a header it would take.
        fields["replyTo"] = _recipients([a.strip() for a in reply_to.split(",") if a.strip()])
    return fields


def _custom_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    # Graph refuses any internetMessageHeaders entry not named x-...: it writes the standard
    # headers itself, and List-Unsubscribe and the like cannot be set through it. Those are
    # dropped rather than failing the message.
    custom = [
        {"name": name, "value": " ".join(value.splitlines())}
        for name, value in headers.items()
        if name.lower().startswith("x-")
    ]
    return {"internetMessageHeaders": custom} if custom else {}


def _recipients(entries: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for entry in entries:
        name, address = parse_address(entry)
        out.append({"emailAddress": {"address": address, "name": name} if name else {"address": address}})
    return out


def _split_attachments(attachments: Sequence[Attachment]) -> tuple[list[Attachment], list[Attachment]]:
    """(sent inside the create request, added to the draft afterwards)."""
    inline: list[Attachment] = []
    later: list[Attachment] = []
    budget = _CREATE_BUDGET
    for attachment in attachments:
        size = len(attachment.data)
        if size <= budget:
            inline.append(attachment)
            budget -= size
        else:
            later.append(attachment)
    return inline, later


def _file_attachment(attachment: Attachment) -> dict[str, Any]:
    item: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": attachment.filename,
        "contentType": attachment.content_type,
        "contentBytes": base64.b64encode(attachment.data).decode("ascii"),
        "isInline": attachment.content_id is not None,
    }
    if attachment.content_id:
        item["contentId"] = attachment.content_id
    return item


def _seg(message_id: str) -> str:
    # Graph ids are base64url-ish but may hold "/" or "=" in other encodings: one path segment.
    return quote(message_id, safe="")


def _chunks(items: Sequence[_Request], size: int) -> Iterator[Sequence[_Request]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def graph_error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of Graph's ``{"error": {"code", "message", "innerError"}}`` body."""
    error = _json_body(response).get("error")
    if isinstance(error, dict):
        return str(error.get("code") or ""), str(error.get("message") or "")
    return "", response.text.strip()[:200] or response.reason_phrase
