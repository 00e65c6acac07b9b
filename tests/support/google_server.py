"""A local HTTP server speaking the Gmail API v1 endpoints the service uses, recording every request.

    with gmail_server(tokens={"ya29.a"}) as gmail:
        transport = GmailTransport(api_url=gmail.url, tokens=...)
        ...
        sent = gmail.sent[0]
        assert sent.mime["Bcc"] == "hidden@example.com"

Endpoints, under ``/gmail/v1/users/me/messages``:

* ``send``: JSON ``{"raw": base64url, "threadId"}``; the raw message is decoded and parsed with the
  stdlib (``SentMessage.mime``). Like Gmail it wants a recipient in To, Cc or Bcc and well-formed
  addresses there (400 "Invalid To header"), refuses more than 5 MB of raw message in JSON, keeps
  the given threadId or starts a thread named after the message, and answers
  ``{"id", "threadId", "labelIds": ["SENT"]}``.
* ``/upload/...send?uploadType=multipart``: the same from a ``multipart/related`` body (JSON metadata
  part, then the ``message/rfc822`` part).
* ``batchModify``: ``{"ids", "addLabelIds", "removeLabelIds"}``, at most 1,000 ids, system labels only,
  SENT and DRAFT not changeable; answers 204 and updates each known message's labels (unknown ids
  are skipped, as Gmail does not report them).

Every request needs ``Authorization: Bearer <token>`` with a token of ``tokens`` (else 401 with
Google's error body); a token's scopes decide what it may do (403 insufficientPermissions).
``fail_next`` makes the next authorized requests answer Google-shaped errors.
Starlette + uvicorn run in a thread with their own event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.http_server import serve_routes

SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"
MODIFY_SCOPE = "https://www.googleapis.com/auth/gmail.modify"
FULL_SCOPE = "https://mail.google.com/"
ALL_SCOPES = frozenset({SEND_SCOPE, MODIFY_SCOPE, FULL_SCOPE})
SIMPLE_SEND_LIMIT = 5 * 1024 * 1024
MAX_MODIFY_IDS = 1000
SYSTEM_LABELS = frozenset(
    {"INBOX", "UNREAD", "STARRED", "IMPORTANT", "TRASH", "SPAM", "SENT", "DRAFT", "CATEGORY_PERSONAL",
     "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS", "CATEGORY_UPDATES", "CATEGORY_FORUMS"}
)  # fmt: skip
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_REASONS = {400: "invalidArgument", 403: "forbidden", 404: "notFound", 429: "rateLimitExceeded"}
_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User-rate limit exceeded.",
    "insufficientPermissions": "Request had insufficient authentication scopes.",
    "backendError": "Backend Error",
    "failedPrecondition": "Precondition check failed.",
}


def google_error(status: int, message: str, reason: str, *, domain: str = "global") -> dict[str, Any]:
    """Google's JSON error body; a missing scope also carries the newer ErrorInfo detail, as Google sends it."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "errors": [{"message": message, "domain": domain, "reason": reason}],
        "status": _STATUS.get(status, "UNKNOWN"),
    }
    if reason == "insufficientPermissions":
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": {"service": "gmail.googleapis.com", "method": "caribou.api.proto.MailboxService"},
            }
        ]
    return {"error": error}


@dataclass
class GmailRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the server answered

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def token(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[7:] if value.startswith("Bearer ") else None


@dataclass
class SentMessage:
    id: str
    thread_id: str
    raw: bytes  # the message as Gmail received it, decoded
    via: str  # "json" or "upload"
    labels: set[str] = field(default_factory=set)

    @property
    def mime(self) -> EmailMessage:
        return cast(EmailMessage, BytesParser(policy=default_policy).parsebytes(self.raw))


@dataclass(frozen=True)
class Modification:
    ids: list[str]
    add: list[str]
    remove: list[str]


@dataclass
class _Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    delay: float


@dataclass
class FakeGmail:
    # access token -> the OAuth scopes it was granted; shared with the OAuth fake that issues tokens
    tokens: dict[str, frozenset[str]]
    url: str = ""
    requests: list[GmailRequest] = field(default_factory=list)
    messages: dict[str, SentMessage] = field(default_factory=dict)  # every message the mailbox holds, by id
    sent: list[SentMessage] = field(default_factory=list)
    modifications: list[Modification] = field(default_factory=list)
    answer_delay: float = 0.0  # seconds every request waits before its answer
    peak_in_flight: int = 0  # the most requests the server held at once
    _in_flight: int = 0
    _failures: deque[_Failure | None] = field(default_factory=deque)

    def grant(self, token: str, scopes: Iterable[str] = ALL_SCOPES) -> None:
        self.tokens[token] = frozenset(scopes)

    def fail_next(
        self,
        count: int,
        status: int,
        reason: str | None = None,
        *,
        message: str | None = None,
        retry_after: float | str | None = None,
        after: int = 0,
        delay: float = 0.0,
    ) -> None:
        """Answer ``count`` authorized requests with Google's error body for ``status`` and ``reason``
        (default: invalidArgument, forbidden, rateLimitExceeded, backendError by status), once ``after``
        more have been answered normally; ``retry_after`` (seconds or an HTTP date) sets Retry-After."""
        reason = reason or _REASONS.get(status, "backendError")
        body = google_error(status, message or _MESSAGES.get(reason, f"error {status}"), reason)
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        self._failures.extend([None] * after)
        self._failures.extend(_Failure(status, body, headers, delay) for _ in range(count))

    def add_message(self, labels: Iterable[str] = ("INBOX", "UNREAD")) -> str:
        """A message received in the mailbox, for the label actions; returns its id."""
        message_id = _new_id()
        self.messages[message_id] = SentMessage(message_id, message_id, b"", "received", set(labels))
        return message_id

    def labels(self, message_id: str) -> set[str]:
        return self.messages[message_id].labels

    def reset(self) -> None:
        self.requests.clear()
        self.messages.clear()
        self.sent.clear()
        self.modifications.clear()
        self._failures.clear()
        self.answer_delay = 0.0
        self.peak_in_flight = 0

    async def handle(self, request: Request) -> Response:
        recorded = GmailRequest(
            request.method,
            request.url.path,
            dict(request.query_params),
            {k.lower(): v for k, v in request.headers.items()},
            await request.body(),
        )
        self.requests.append(recorded)
        self._in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            if self.answer_delay:
                await asyncio.sleep(self.answer_delay)
            response = await self._answer(recorded)
        finally:
            self._in_flight -= 1
        recorded.status = response.status_code
        return response

    async def _answer(self, req: GmailRequest) -> Response:
        scopes = self.tokens.get(req.token or "")
        if scopes is None:
            message = (
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential."
            )
            return JSONResponse(
                google_error(401, message, "authError"),
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            if failure.delay:
                await asyncio.sleep(failure.delay)
            return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)
        if req.path.endswith("/batchModify"):
            if not scopes & {MODIFY_SCOPE, FULL_SCOPE}:
                return _error(403, "insufficientPermissions")
            return self._modify(req)
        if not scopes & {SEND_SCOPE, MODIFY_SCOPE, FULL_SCOPE}:
            return _error(403, "insufficientPermissions")
        upload = req.path.startswith("/upload/")
        parsed = _upload(req) if upload else _simple(req)
        if isinstance(parsed, Response):
            return parsed
        return self._send(*parsed, via="upload" if upload else "json")

    def _send(self, raw: bytes, thread_id: str | None, *, via: str) -> Response:
        mime = BytesParser(policy=default_policy).parsebytes(raw)
        recipients = 0
        for name in ("To", "Cc", "Bcc"):
            values = mime.get_all(name) or []
            pairs = getaddresses([str(v) for v in values])
            if any("@" not in address or " " in address for _, address in pairs):
                return _error(400, "invalidArgument", f"Invalid {name} header")
            recipients += len(pairs)
        if not recipients:
            return _error(400, "invalidArgument", "Recipient address required")
        message_id = _new_id()
        message = SentMessage(message_id, thread_id or message_id, raw, via, {"SENT"})
        self.messages[message_id] = message
        self.sent.append(message)
        return JSONResponse({"id": message_id, "threadId": message.thread_id, "labelIds": ["SENT"]})

    def _modify(self, req: GmailRequest) -> Response:
        try:
            body = req.json
        except ValueError:
            return _error(400, "invalidArgument", "Invalid JSON payload received.")
        ids = body.get("ids") or []
        add = body.get("addLabelIds") or []
        remove = body.get("removeLabelIds") or []
        if not ids:
            return _error(400, "invalidArgument", "No message ids specified.")
        if len(ids) > MAX_MODIFY_IDS:
            return _error(400, "invalidArgument", f"Too many ids specified. Maximum is {MAX_MODIFY_IDS}.")
        for label in [*add, *remove]:
            if label not in SYSTEM_LABELS or label in ("SENT", "DRAFT"):
                return _error(400, "invalidArgument", f"Invalid label: {label}")
        self.modifications.append(Modification(list(ids), list(add), list(remove)))
        for message_id in ids:
            message = self.messages.get(message_id)
            if message is not None:
                message.labels = (message.labels | set(add)) - set(remove)
        return Response(status_code=204)


def _error(status: int, reason: str, message: str | None = None) -> JSONResponse:
    return JSONResponse(google_error(status, message or _MESSAGES.get(reason, reason), reason), status_code=status)


def _new_id() -> str:
    return secrets.token_hex(8)  # Gmail ids are 16 hex digits


def _simple(req: GmailRequest) -> tuple[bytes, str | None] | Response:
    try:
        body = req.json
    except ValueError:
        return _error(400, "invalidArgument", "Invalid JSON payload received.")
    raw = body.get("raw") if isinstance(body, dict) else None
    if not isinstance(raw, str) or not raw:
        message = "'raw' RFC822 payload message string or uploading message via /upload/* URL required"
        return _error(400, "invalidArgument", message)
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        return _error(400, "invalidArgument", "Invalid value for ByteString: raw")
    if len(decoded) > SIMPLE_SEND_LIMIT:
        return _error(400, "badRequest", "Request payload size exceeds the limit: 5242880 bytes.")
    thread_id = body.get("threadId")
    return decoded, str(thread_id) if thread_id else None


def _upload(req: GmailRequest) -> tuple[bytes, str | None] | Response:
    if req.query.get("uploadType") != "multipart":
        return _error(400, "invalidArgument", "Invalid upload type: expected uploadType=multipart")
    content_type = req.headers.get("content-type", "")
    boundary = _param(content_type, "boundary")
    if not content_type.lower().startswith("multipart/related") or not boundary:
        return _error(400, "badContent", "Media type must be multipart/related with a boundary")
    parts = _split_multipart(req.body, boundary)
    if len(parts) != 2:
        return _error(400, "badContent", f"Expected 2 parts (metadata, media), got {len(parts)}")
    (meta_headers, meta_body), (media_headers, media_body) = parts
    if not meta_headers.get("content-type", "").startswith("application/json"):
        return _error(400, "badContent", "The metadata part must be application/json")
    if media_headers.get("content-type", "").split(";")[0].strip() != "message/rfc822":
        return _error(400, "badContent", "Media type 'application/octet-stream' is not supported.")
    metadata = json.loads(meta_body or b"{}")
    thread_id = metadata.get("threadId")
    return media_body, str(thread_id) if thread_id else None


def _param(header: str, name: str) -> str | None:
    for item in header.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.lower() == name:
            return value.strip('"')
    return None


def _split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    # Byte-exact: the media part is compared with the message sent, so no parser may rewrite it.
    delimiter = b"--" + boundary.encode()
    chunks = body.split(b"\r\n" + delimiter)
    first = chunks[0]
    if not first.startswith(delimiter):
        return []
    chunks[0] = first[len(delimiter) :]
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if value:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, data))
    return parts


@contextmanager
def gmail_server(*, tokens: Mapping[str, Iterable[str]] | Iterable[str] = ()) -> Iterator[FakeGmail]:
    """Serve a fake Gmail API on a free loopback port for the duration of the block.

    ``tokens``: valid access tokens, each with all scopes, or a mapping of token -> scopes."""
    if isinstance(tokens, Mapping):
        granted = {token: frozenset(scopes) for token, scopes in tokens.items()}
    else:
        granted = dict.fromkeys(tokens, ALL_SCOPES)
    fake = FakeGmail(granted)
    base = "/gmail/v1/users/me/messages"
    routes = [
        Route(f"{base}/send", fake.handle, methods=["POST"]),
        Route(f"/upload{base}/send", fake.handle, methods=["POST"]),
        Route(f"{base}/batchModify", fake.handle, methods=["POST"]),
    ]
    with serve_routes(routes, name="Gmail") as url:
        fake.url = url
        yield fake
