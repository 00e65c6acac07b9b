"""Gmail over the Gmail API v1, acting as the connected Google account (OAuth bearer token).

Sending: each message is complete RFC 5322 MIME with its Bcc header (Gmail delivers to the
To, Cc and Bcc headers and removes Bcc before delivery):

* up to 5 MB, ``POST /gmail/v1/users/me/messages/send`` with ``{"raw": base64url, "threadId"}``;
* larger (up to Gmail's 35 MB), the media upload ``POST /upload/gmail/v1/users/me/messages/send
  ?uploadType=multipart``: a ``multipart/related`` body holding the JSON metadata (threadId) and
  the ``message/rfc822`` part, streamed from the message's segments without base64.

Gmail answers the sent message resource ``{"id", "threadId", "labelIds"}``.

Mailbox actions (mark read or unread, trash, archive) change labels with
``POST /gmail/v1/users/me/messages/batchModify``, at most 1,000 ids per request.

Errors are read from Google's body ``{"error": {"code", "message", "errors": [{"reason"}],
"status", "details"}}``: 429, 5xx and 403 rate limits are transient (``Retry-After``, a
"Retry after <time>" in the message, or a minute); a missing scope is permanent and names it;
401 gets one new token and one retry; a 400 or other 4xx about one message fails that message.
Once a request is refused as a whole, the rest of the call is not attempted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from mailroom.transports.base import (
    MAILBOX_SIZE_LIMIT,
    Capabilities,
    HeldToken,
    OutgoingMessage,
    PermanentSendError,
    RouteOptions,
    SendError,
    SendResult,
    TokenSource,
    TransientSendError,
    settle,
)
from mailroom.transports.responses import json_object, retry_after

# Above this the JSON ``raw`` form is not accepted; Gmail documents the upload endpoint for it.
SIMPLE_SEND_LIMIT: Final = 5 * 1024 * 1024
# The most the upload endpoint of messages.send takes.
MAX_MESSAGE_SIZE: Final = 35 * 1024 * 1024
MAX_MODIFY_IDS: Final = 1000
# Without a Retry-After, how long a rate-limited or failing credential waits before the next try.
DEFAULT_RETRY_AFTER: Final = 60.0
# A day's sending quota spent: trying again within the hour is pointless.
QUOTA_RETRY_AFTER: Final = 3600.0

# Our names for the OAuth scopes, as the user is asked to grant them.
SEND_SCOPE: Final = "mail.send"
MODIFY_SCOPE: Final = "mail.modify"

_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"})
_QUOTA_REASONS = frozenset({"dailyLimitExceeded", "quotaExceeded"})
_SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})
# "User-rate limit exceeded.  Retry after 2026-01-01T12:00:00.000Z" (the sending limits say when).
_RETRY_AFTER_TEXT = re.compile(r"Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)")


@dataclass(frozen=True, slots=True)
class LabelChange:
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


# What each mailbox action does to a message's Gmail system labels.
MAILBOX_ACTIONS: Final[Mapping[str, LabelChange]] = {
    "read": LabelChange(remove=("UNREAD",)),
    "unread": LabelChange(add=("UNREAD",)),
    "trash": LabelChange(add=("TRASH",)),
    "archive": LabelChange(remove=("INBOX",)),
}


@dataclass(frozen=True, slots=True)
class GmailOptions(RouteOptions):
    """What a message sent through Gmail carries besides itself."""

    # The thread the message joins (the campaign's headers.thread_id).
    thread_id: str | None = None


@dataclass(frozen=True, slots=True)
class _GoogleError:
    status: int
    message: str
    reasons: frozenset[str]
    retry_after: float | None  # from the Retry-After header


class GmailTransport:
    """See the module docstring and ``mailroom.transports.base`` for the contract."""

    name = "gmail"
    # Every To, Cc and Bcc address counts against the account's daily recipient quota, and
    # Google refuses large recipient lists from mail not sent in its web interface well before
    # a relay would: 100 stays inside the sending limits Google publishes for Workspace accounts.
    capabilities = Capabilities(max_recipients_per_call=100, size_limit=MAILBOX_SIZE_LIMIT, mailbox=True)

    def __init__(
        self,
        *,
        api_url: str,
        tokens: TokenSource,
        client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
        concurrency: int = 4,
    ) -> None:
        base = api_url.rstrip("/")
        self._send_url = f"{base}/gmail/v1/users/me/messages/send"
        self._upload_url = f"{base}/upload/gmail/v1/users/me/messages/send?uploadType=multipart"
        self._modify_url = f"{base}/gmail/v1/users/me/messages/batchModify"
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._concurrency = concurrency
        self._token = HeldToken(tokens)

    def __repr__(self) -> str:  # never shows the token
        return f"GmailTransport({self._send_url!r})"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        # Asked once per call; a PermanentSendError (revoked account) propagates from here as is.
        await self._token.renew()
        slots = asyncio.Semaphore(self._concurrency)
        abort: list[SendError] = []

        async def one(msg: OutgoingMessage) -> SendResult | SendError:
            async with slots:
                if abort:  # an earlier request of this call was refused as a whole
                    return abort[0]
                outcome = await self._send(msg)
            if isinstance(outcome, SendError):
                abort.append(outcome)
            return outcome

        outcomes = await asyncio.gather(*(one(m) for m in messages))
        return settle(messages, outcomes)

    async def modify_messages(
        self,
        message_ids: Sequence[str],
        *,
        add_labels: Sequence[str] = (),
        remove_labels: Sequence[str] = (),
    ) -> None:
        """Add and remove labels on Gmail messages, 1,000 ids per request, one request at a time.

        Raises TransientSendError (retry later, ``retry_after``) or PermanentSendError; requests
        before the failing one have been applied, and applying them again changes nothing.
        """
        ids = list(dict.fromkeys(message_ids))
        if not ids or not (add_labels or remove_labels):
            return
        await self._token.renew()
        for start in range(0, len(ids), MAX_MODIFY_IDS):
            body = {
                "ids": ids[start : start + MAX_MODIFY_IDS],
                "addLabelIds": list(add_labels),
                "removeLabelIds": list(remove_labels),
            }
            response = await self._request("POST", self._modify_url, payload=body)
            if isinstance(response, SendError):
                raise response
            if response.status_code not in (200, 204):
                error = _google_error(response)
                raise self._call_error(error, MODIFY_SCOPE) or PermanentSendError(
                    f"Gmail refused to change the messages' labels ({error.status}): {error.message}"
                )

    async def apply_action(self, action: str, message_ids: Sequence[str]) -> None:
        """One of ``MAILBOX_ACTIONS`` (read, unread, trash, archive) on these Gmail message ids."""
        change = MAILBOX_ACTIONS.get(action)
        if change is None:
            raise ValueError(f"unknown mailbox action {action!r}; expected one of {', '.join(MAILBOX_ACTIONS)}")
        await self.modify_messages(message_ids, add_labels=change.add, remove_labels=change.remove)

    async def _send(self, msg: OutgoingMessage) -> SendResult | SendError:
        size = sum(len(s) for s in msg.segments)
        if size > MAX_MESSAGE_SIZE:
            mb = MAX_MESSAGE_SIZE // (1024 * 1024)
            return SendResult(msg.key, None, f"the message is {size / 2**20:.1f} MB; Gmail takes at most {mb} MB", True)
        options = msg.options if isinstance(msg.options, GmailOptions) else None
        metadata: dict[str, str] = {"threadId": options.thread_id} if options and options.thread_id else {}
        if size <= SIMPLE_SEND_LIMIT:
            # Joined only for the request in flight (a few at a time).
            raw = base64.urlsafe_b64encode(msg.joined()).decode("ascii")
            response = await self._request("POST", self._send_url, payload={"raw": raw, **metadata})
        else:
            boundary = f"mr_{secrets.token_hex(12)}"
            head = (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{json.dumps(metadata)}\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
            ).encode()
            tail = f"\r\n--{boundary}--\r\n".encode()
            response = await self._request(
                "POST",
                self._upload_url,
                headers={
                    "Content-Type": f'multipart/related; boundary="{boundary}"',
                    "Content-Length": str(len(head) + size + len(tail)),
                },
                body=(head, *msg.segments, tail),
            )
        if isinstance(response, SendError):
            return response
        if response.status_code == 200:
            body = json_object(response)
            provider_id = str(body.get("id") or "") or None
            thread_id = str(body.get("threadId") or "") or None
            error = None if provider_id else "Gmail sent the message without an id"
            return SendResult(msg.key, provider_id, error, error is not None, thread_id=thread_id)
        google = _google_error(response)
        call_error = self._call_error(google, SEND_SCOPE)
        if call_error is not None:
            return call_error
        return SendResult(msg.key, None, f"Gmail refused the message ({google.status}): {google.message}", True)

    def _call_error(self, error: _GoogleError, scope: str) -> SendError | None:
        """The error that stops the whole call, or None when the refusal is about one request."""
        status, reasons = error.status, error.reasons
        if status == 401:
            return PermanentSendError("Google no longer accepts this account's access: reconnect your Gmail account")
        if status == 429 or status >= 500 or (status == 403 and reasons & _RATE_REASONS):
            return TransientSendError(f"Gmail answered {status}: {error.message}", retry_after=_retry_after(error))
        if status == 403 and reasons & _QUOTA_REASONS:
            return TransientSendError(f"Gmail quota exceeded: {error.message}", retry_after=QUOTA_RETRY_AFTER)
        if status == 403 and reasons & _SCOPE_REASONS:
            return PermanentSendError(
                f"the Google account did not grant the {scope} permission: reconnect your Gmail account and allow it"
            )
        if status == 403 or (status == 400 and "failedPrecondition" in reasons):
            # Gmail disabled for the account, delegation refused, domain policy: no message can go.
            return PermanentSendError(f"Gmail refused this account ({status}): {error.message}")
        return None

    async def _request(
        self,
        method: str,
        url: str,
        *,
        payload: Any = None,
        headers: Mapping[str, str] | None = None,
        body: tuple[bytes, ...] | None = None,
    ) -> httpx.Response | SendError:
        """The response (any status but a first 401), or a transient error when Gmail was not reached."""
        token = await self._token.get()
        for attempt in range(2):
            request_headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
            content = _stream(body) if body is not None else None
            try:
                response = await self._client.request(
                    method, url, json=payload, content=content, headers=request_headers
                )
            except httpx.TimeoutException as exc:
                return TransientSendError(f"Gmail did not answer in time ({type(exc).__name__})")
            except httpx.TransportError as exc:
                return TransientSendError(f"cannot reach Gmail: {exc}")
            if response.status_code != 401 or attempt:
                return response
            try:
                token = await self._token.get(refused=token)
            except SendError as exc:  # the account was revoked: the token source says what to do
                return exc
        raise AssertionError("unreachable")


async def _stream(parts: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _google_error(response: httpx.Response) -> _GoogleError:
    error = json_object(response).get("error")
    if not isinstance(error, dict):
        text = response.text.strip()[:200] or response.reason_phrase
        return _GoogleError(response.status_code, text, frozenset(), retry_after(response))
    reasons: set[str] = set()
    for key in ("errors", "details"):  # v1 "errors" and the newer google.rpc.ErrorInfo "details"
        for item in error.get(key) or ():
            if isinstance(item, dict) and item.get("reason"):
                reasons.add(str(item["reason"]))
    message = str(error.get("message") or error.get("status") or response.reason_phrase)
    return _GoogleError(response.status_code, message, frozenset(reasons), retry_after(response))


def _retry_after(error: _GoogleError) -> float:
    """Seconds to wait: the Retry-After header, else the time in Gmail's "Retry after <time>", else a minute."""
    if error.retry_after is not None:
        return error.retry_after
    text = _RETRY_AFTER_TEXT.search(error.message)
    if text:
        when = datetime.fromisoformat(text.group(1).replace("Z", "+00:00"))
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return DEFAULT_RETRY_AFTER
