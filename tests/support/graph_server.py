"""A local HTTP server speaking the Microsoft Graph v1.0 mail endpoints of one mailbox (``/me``).

    with graph_server(access_token="tok-1") as graph:
        inbox = graph.seed(subject="Question", sender="ann@example.com")
        transport = OutlookTransport(graph_url=graph.url, tokens=...)
        ...
        [sent] = graph.sent
        assert sent.to == ["ann@example.com"]

Like Graph it checks the bearer token (401 ``InvalidAuthenticationToken``), answers errors as
``{"error": {"code", "message", "innerError"}}``, refuses requests over 4 MB (413), custom
headers not named ``x-`` (400), unknown ids (404 ``ErrorItemNotFound``), upload ranges out of
order or not multiples of 320 KiB, a bearer token on the pre-authenticated upload URL, and
batches of more than 20 requests. Ids are immutable: a sent draft keeps its id in Sent Items.
``fail_next`` answers the next matching requests (or ``$batch`` items) with a Graph error.
Starlette + uvicorn run in a thread with their own event loop.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.http_server import serve_routes

MAX_REQUEST = 4 * 1024 * 1024
MAX_BATCH = 20
UPLOAD_UNIT = 320 * 1024
FOLDERS = frozenset({"inbox", "drafts", "sentitems", "deleteditems", "archive", "junkemail"})
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)\Z")
_Answer = tuple[int, Any, dict[str, str]]  # status, JSON body (None: empty), headers


@dataclass
class GraphAttachment:
    id: str
    name: str
    content_type: str
    data: bytes
    content_id: str | None = None
    is_inline: bool = False


@dataclass
class GraphMessage:
    id: str
    subject: str
    body: dict[str, str]
    sender: dict[str, Any] | None
    to_recipients: list[dict[str, Any]] = field(default_factory=list)
    cc_recipients: list[dict[str, Any]] = field(default_factory=list)
    bcc_recipients: list[dict[str, Any]] = field(default_factory=list)
    reply_to: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    attachments: list[GraphAttachment] = field(default_factory=list)
    conversation_id: str = ""
    is_draft: bool = True
    is_read: bool = True
    folder: str = "drafts"
    reply_to_message: str | None = None  # the id createReply answered

    @property
    def to(self) -> list[str]:
        return [r["emailAddress"]["address"] for r in self.to_recipients]

    @property
    def cc(self) -> list[str]:
        return [r["emailAddress"]["address"] for r in self.cc_recipients]

    @property
    def bcc(self) -> list[str]:
        return [r["emailAddress"]["address"] for r in self.bcc_recipients]

    def header(self, name: str) -> str | None:
        return next((h["value"] for h in self.headers if h["name"].lower() == name.lower()), None)

    def json(self) -> dict[str, Any]:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('me')/messages/$entity",
            "id": self.id,
            "subject": self.subject,
            "body": self.body,
            "from": self.sender,
            "sender": self.sender,
            "toRecipients": self.to_recipients,
            "ccRecipients": self.cc_recipients,
            "bccRecipients": self.bcc_recipients,
            "replyTo": self.reply_to,
            "conversationId": self.conversation_id,
            "isDraft": self.is_draft,
            "isRead": self.is_read,
            "hasAttachments": bool(self.attachments),
        }


@dataclass
class GraphRequest:
    method: str
    path: str  # under /v1.0, e.g. /me/messages
    body: Any
    headers: dict[str, str]
    status: int = 0
    in_batch: bool = False


@dataclass
class _Failure:
    status: int
    code: str
    message: str
    retry_after: int | None
    path: str | None  # only requests whose path contains this


@dataclass
class _Upload:
    message_id: str
    item: dict[str, Any]
    data: bytearray = field(default_factory=bytearray)


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> _Answer:
    inner = {"date": "2026-01-01T00:00:00", "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}
    return status, {"error": {"code": code, "message": message, "innerError": inner}}, headers or {}


def _not_found() -> _Answer:
    return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")


@dataclass
class FakeGraph:
    access_token: str
    address: str
    name: str
    url: str = ""
    messages: dict[str, GraphMessage] = field(default_factory=dict)
    sent: list[GraphMessage] = field(default_factory=list)
    requests: list[GraphRequest] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    uploads: dict[str, _Upload] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)
    _item_failures: list[_Failure] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        code: str = "",
        message: str = "",
        retry_after: int | None = None,
        path: str | None = None,
        in_batch: bool = False,
    ) -> None:
        """Answer the next ``count`` authenticated requests (whose path contains ``path``, when
        given) with a Graph error; ``in_batch``: the next requests inside ``$batch`` calls."""
        code = code or {429: "TooManyRequests", 503: "ServiceNotAvailable", 403: "ErrorAccessDenied"}.get(
            status, "ErrorInternalServerError" if status >= 500 else "ErrorInvalidRequest"
        )
        message = message or f"error {status}"
        queue = self._item_failures if in_batch else self._failures
        queue.extend(_Failure(status, code, message, retry_after, path) for _ in range(count))

    def reset(self) -> None:
        self.messages.clear()
        self.sent.clear()
        self.requests.clear()
        self.batch_sizes.clear()
        self.uploads.clear()
        self._failures.clear()
        self._item_failures.clear()

    def seed(
        self, *, subject: str, sender: str, conversation_id: str | None = None, folder: str = "inbox"
    ) -> GraphMessage:
        """A message already in the mailbox (received), unread."""
        message = GraphMessage(
            id=self._new_id(),
            subject=subject,
            body={"contentType": "html", "content": f"<p>{subject}</p>"},
            sender={"emailAddress": {"address": sender, "name": ""}},
            conversation_id=conversation_id or f"conv-{uuid.uuid4().hex[:12]}",
            is_draft=False,
            is_read=False,
            folder=folder,
        )
        self.messages[message.id] = message
        return message

    def drafts(self) -> list[GraphMessage]:
        return [m for m in self.messages.values() if m.folder == "drafts"]

    def _new_id(self) -> str:
        # Graph ids are long base64url strings; these end in "=" like theirs.
        return base64.urlsafe_b64encode(f"AAMkAD-{next(self._ids):06d}".encode()).decode()

    def _failure(self, queue: list[_Failure], path: str) -> _Failure | None:
        for i, failure in enumerate(queue):
            if failure.path is None or failure.path in path:
                return queue.pop(i)
        return None

    @staticmethod
    def _failed(failure: _Failure) -> _Answer:
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        return graph_error(failure.status, failure.code, failure.message, headers)

    # -- HTTP entry points ------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        recorded = GraphRequest(request.method, path, body, dict(request.headers))
        self.requests.append(recorded)
        status, payload, headers = self._answer(request, path, raw, body)
        recorded.status = status
        if payload is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(payload, status_code=status, headers=headers)

    def _answer(self, request: Request, path: str, raw: bytes, body: Any) -> _Answer:
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
        failure = self._failure(self._failures, path)
        if failure is not None:
            return self._failed(failure)
        if len(raw) > MAX_REQUEST:
            return graph_error(413, "ErrorRequestEntityTooLarge", "The request is larger than 4 MB.")
        if raw and not isinstance(body, dict):
            return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
        if path == "/$batch" and request.method == "POST":
            return self._batch(body or {})
        return self.dispatch(request.method, path, body or {})

    def _batch(self, body: dict[str, Any]) -> _Answer:
        items = body.get("requests")
        if not isinstance(items, list) or not items:
            return graph_error(400, "BadRequest", "Invalid batch payload format.")
        if len(items) > MAX_BATCH:
            return graph_error(400, "BadRequest", f"The number of requests exceeds the limit of {MAX_BATCH}.")
        self.batch_sizes.append(len(items))
        responses = []
        for item in items:
            method, url = str(item.get("method", "")).upper(), str(item.get("url", ""))
            path = url if url.startswith("/") else "/" + url
            self.requests.append(GraphRequest(method, path, item.get("body"), item.get("headers") or {}, 0, True))
            failure = self._failure(self._item_failures, path)
            status, payload, headers = (
                self._failed(failure) if failure else self.dispatch(method, path, item.get("body") or {})
            )
            self.requests[-1].status = status
            answer: dict[str, Any] = {"id": item.get("id"), "status": status, "headers": headers}
            if payload is not None:
                answer["body"] = payload
            responses.append(answer)
        return 200, {"responses": responses}, {}

    async def handle_upload(self, request: Request) -> Response:
        raw = await request.body()
        self.requests.append(GraphRequest("PUT", request.url.path, None, dict(request.headers)))
        status, payload, headers = self._upload(request, raw)
        self.requests[-1].status = status
        if payload is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(payload, status_code=status, headers=headers)

    def _upload(self, request: Request, raw: bytes) -> _Answer:
        upload = self.uploads.get(request.path_params["token"])
        if upload is None:
            return graph_error(404, "ErrorItemNotFound", "The upload session was not found or has expired.")
        if "authorization" in request.headers:
            # The URL is pre-authenticated; Graph refuses a bearer token on it.
            return graph_error(401, "InvalidAudienceForResource", "The audience claim value is invalid.")
        match = _RANGE.match(request.headers.get("content-range", ""))
        if match is None:
            return graph_error(400, "ErrorInvalidContentRange", "Content-Range header is missing or invalid.")
        start, end, total = (int(g) for g in match.groups())
        size = int(upload.item["size"])
        if total != size or start != len(upload.data) or end - start + 1 != len(raw) or end >= size:
            return graph_error(416, "ErrorInvalidContentRange", "The Content-Range does not match the session.")
        last = end + 1 == size
        if len(raw) > MAX_REQUEST or (not last and len(raw) % UPLOAD_UNIT):
            return graph_error(400, "ErrorInvalidContentRange", "Chunks must be multiples of 320 KiB, up to 4 MB.")
        upload.data.extend(raw)
        if not last:
            return 200, {"expirationDateTime": "2099-01-01T00:00:00Z", "nextExpectedRanges": [f"{end + 1}-"]}, {}
        message = self.messages.get(upload.message_id)
        if message is None:
            return _not_found()
        item = upload.item
        attachment = GraphAttachment(
            self._new_id(),
            str(item.get("name", "")),
            str(item.get("contentType") or "application/octet-stream"),
            bytes(upload.data),
            item.get("contentId"),
            bool(item.get("isInline", False)),
        )
        message.attachments.append(attachment)
        del self.uploads[request.path_params["token"]]
        location = f"{self.url}/v1.0/me/messages('{message.id}')/attachments('{attachment.id}')"
        return 201, None, {"Location": location}

    # -- Graph operations (top-level or inside $batch) -----------------------------------------

    def dispatch(self, method: str, path: str, body: dict[str, Any]) -> _Answer:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts[:2] != ["me", "messages"]:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{path}'.")
        rest = parts[2:]
        if not rest:
            return self._create(body) if method == "POST" else graph_error(405, "BadRequest", "Method not allowed.")
        message = self.messages.get(unquote(rest[0]))
        if message is None:
            return _not_found()
        action = "/".join(rest[1:])
        handlers = {
            ("PATCH", ""): self._patch,
            ("DELETE", ""): self._delete,
            ("POST", "send"): self._send,
            ("POST", "createReply"): self._create_reply,
            ("POST", "move"): self._move,
            ("POST", "attachments"): self._add_attachment,
            ("POST", "attachments/createUploadSession"): self._upload_session,
        }
        handler = handlers.get((method, action))
        if handler is None:
            return graph_error(400, "BadRequest", f"Unsupported {method} {path}.")
        return handler(message, body)

    def _create(self, body: dict[str, Any]) -> _Answer:
        message = GraphMessage(
            id=self._new_id(),
            subject="",
            body={"contentType": "text", "content": ""},
            sender=None,
            conversation_id=f"conv-{uuid.uuid4().hex[:12]}",
        )
        error = self._apply(message, body, creating=True)
        if error:
            return error
        self.messages[message.id] = message
        return 201, message.json(), {}

    def _apply(self, message: GraphMessage, body: dict[str, Any], *, creating: bool) -> _Answer | None:
        for header in body.get("internetMessageHeaders") or []:
            if not creating:
                return graph_error(400, "ErrorInvalidPropertyUpdate", "Headers can only be set at creation.")
            if not str(header.get("name", "")).lower().startswith("x-"):
                text = f"The internet message header name '{header.get('name')}' should start with 'x-' or 'X-'."
                return graph_error(400, "InvalidInternetMessageHeader", text)
            message.headers.append({"name": header["name"], "value": header["value"]})
        editable = {"subject", "body", "toRecipients", "ccRecipients", "bccRecipients", "replyTo"}
        if not message.is_draft and editable & body.keys():
            return graph_error(400, "ErrorInvalidPropertyUpdateSentMessage", "Update of sent messages is not allowed.")
        if "subject" in body:
            message.subject = str(body["subject"])
        if "body" in body:
            kind = str(body["body"].get("contentType", "text")).lower()
            message.body = {"contentType": kind, "content": str(body["body"].get("content", ""))}
        for key, attr in (
            ("toRecipients", "to_recipients"),
            ("ccRecipients", "cc_recipients"),
            ("bccRecipients", "bcc_recipients"),
            ("replyTo", "reply_to"),
        ):
            if key in body:
                setattr(message, attr, list(body[key] or []))
        if "isRead" in body:
            message.is_read = bool(body["isRead"])
        for item in body.get("attachments") or []:
            error = self._attach(message, item)
            if error:
                return error
        return None

    def _attach(self, message: GraphMessage, item: dict[str, Any]) -> _Answer | None:
        if item.get("@odata.type") != "#microsoft.graph.fileAttachment":
            return graph_error(400, "ErrorInvalidRequest", "Only file attachments are supported here.")
        try:
            data = base64.b64decode(str(item.get("contentBytes", "")), validate=True)
        except ValueError:
            return graph_error(400, "ErrorInvalidRequest", "contentBytes is not base64.")
        message.attachments.append(
            GraphAttachment(
                self._new_id(),
                str(item.get("name", "")),
                str(item.get("contentType") or "application/octet-stream"),
                data,
                item.get("contentId"),
                bool(item.get("isInline", False)),
            )
        )
        return None

    def _patch(self, message: GraphMessage, body: dict[str, Any]) -> _Answer:
        error = self._apply(message, body, creating=False)
        return error or (200, message.json(), {})

    def _delete(self, message: GraphMessage, body: dict[str, Any]) -> _Answer:
        del self.messages[message.id]
        return 204, None, {}

    def _send(self, message: GraphMessage, body: dict[str, Any]) -> _Answer:
        if not message.is_draft:
            return graph_error(400, "ErrorInvalidOperation", "Only draft messages can be sent.")
        addresses = message.to + message.cc + message.bcc
        if not addresses or any("@" not in a for a in addresses):
            text = "At least one recipient isn't valid., A message can't be sent because it contains no recipients."
            return graph_error(400, "ErrorInvalidRecipients", text)
        message.is_draft = False
        message.folder = "sentitems"
        message.sender = {"emailAddress": {"address": self.address, "name": self.name}}
        self.sent.append(message)
        return 202, None, {}

    def _create_reply(self, original: GraphMessage, body: dict[str, Any]) -> _Answer:
        draft = GraphMessage(
            id=self._new_id(),
            subject=f"RE: {original.subject}",
            body={"contentType": "html", "content": f"<hr><p>{original.body['content']}</p>"},
            sender=None,
            to_recipients=[original.sender] if original.sender else [],
            conversation_id=original.conversation_id,
            reply_to_message=original.id,
        )
        error = self._apply(draft, body.get("message") or {}, creating=True)
        if error:
            return error
        self.messages[draft.id] = draft
        return 201, draft.json(), {}

    def _move(self, message: GraphMessage, body: dict[str, Any]) -> _Answer:
        destination = str(body.get("destinationId", ""))
        if destination.lower() not in FOLDERS:
            return graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        message.folder = destination.lower()
        return 201, message.json(), {}

    def _add_attachment(self, message: GraphMessage, body: dict[str, Any]) -> _Answer:
        error = self._attach(message, body)
        if error:
            return error
        attachment = message.attachments[-1]
        return 201, {"id": attachment.id, "name": attachment.name, "size": len(attachment.data)}, {}

    def _upload_session(self, message: GraphMessage, body: dict[str, Any]) -> _Answer:
        item = body.get("AttachmentItem")
        if not isinstance(item, dict) or item.get("attachmentType") != "file" or not item.get("name"):
            return graph_error(400, "ErrorInvalidRequest", "AttachmentItem with attachmentType file and name required.")
        if not isinstance(item.get("size"), int) or item["size"] <= 0:
            return graph_error(400, "ErrorInvalidRequest", "AttachmentItem.size is required.")
        token = uuid.uuid4().hex
        self.uploads[token] = _Upload(message.id, item)
        session = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
            "uploadUrl": f"{self.url}/upload/{token}",
            "expirationDateTime": "2099-01-01T00:00:00Z",
            "nextExpectedRanges": ["0-"],
        }
        return 201, session, {}


@contextmanager
def graph_server(
    *, access_token: str = "graph-token", address: str = "bob@contoso.com", name: str = "Bob Ray"
) -> Iterator[FakeGraph]:
    """Serve a fake Graph mailbox on a free loopback port for the duration of the block."""
    fake = FakeGraph(access_token, address, name)
    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    routes = [
        Route("/v1.0/{path:path}", fake.handle, methods=methods),
        Route("/upload/{token}", fake.handle_upload, methods=["PUT"]),
    ]
    with serve_routes(routes, name="Graph") as url:
        fake.url = url
        yield fake
