"""A local HTTP server speaking the Mailgun messages API, recording every request.

    with mailgun_server(api_key="key-1", domains={"mg.example.com"}) as mg:
        transport = MailgunTransport(mg.url, "key-1", "mg.example.com")
        ...
        request = mg.requests[0]
        assert request.fields["to"] == ["ann@example.com"]

Like Mailgun it checks basic auth (``api:KEY``, else 401 "Forbidden"), knows only its
domains (404), parses the multipart (or urlencoded) form, validates the required fields
(400) and answers ``{"id": "<...>", "message": "Queued. Thank you."}``. ``fail_next``
makes the next N requests answer with a chosen status (429 with Retry-After, 503, ...).
Starlette + uvicorn run in a thread with their own event loop.
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any, cast

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.support.http_server import serve_routes


@dataclass(frozen=True)
class UploadedFile:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class MailgunRequest:
    domain: str
    endpoint: str  # "messages" or "messages.mime"
    fields: dict[str, list[str]]
    files: dict[str, list[UploadedFile]]
    content_type: str
    status: int = 0  # what the server answered

    def field(self, name: str) -> str:
        """The single value of a form field (KeyError if absent, AssertionError if repeated)."""
        values = self.fields[name]
        assert len(values) == 1, f"{name} sent {len(values)} times"
        return values[0]

    @property
    def mime(self) -> EmailMessage | None:
        """The ``message`` file of a messages.mime request, parsed with the stdlib."""
        files = self.files.get("message")
        if not files:
            return None
        return cast(EmailMessage, BytesParser(policy=default_policy).parsebytes(files[0].data))


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str]
    delay: float


@dataclass
class FakeMailgun:
    api_key: str
    domains: set[str]
    url: str = ""
    requests: list[MailgunRequest] = field(default_factory=list)
    _failures: deque[_Failure | None] = field(default_factory=deque)

    def fail_next(
        self,
        count: int,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        after: int = 0,
        delay: float = 0.0,
    ) -> None:
        """Answer ``count`` authenticated requests with ``status`` (JSON ``body``), once
        ``after`` more have been answered normally; wait ``delay`` seconds before answering."""
        if body is None:
            body = {"message": f"error {status}"} if status != 200 else {"id": "<late@x>", "message": "Queued."}
        self._failures.extend([None] * after)
        self._failures.extend(_Failure(status, body, headers or {}, delay) for _ in range(count))

    def reset(self) -> None:
        self.requests.clear()
        self._failures.clear()

    def _authorized(self, request: Request) -> bool:
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        return request.headers.get("authorization") == expected

    async def handle(self, request: Request) -> Response:
        domain = request.path_params["domain"]
        endpoint = request.url.path.rsplit("/", 1)[-1]
        # Mailgun takes up to 1,000 `to` fields per call; Starlette's default caps are lower.
        form = await request.form(max_files=10_000, max_fields=10_000, max_part_size=64 * 1024 * 1024)
        fields: dict[str, list[str]] = {}
        files: dict[str, list[UploadedFile]] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                item = UploadedFile(value.filename, value.content_type, await value.read())
                files.setdefault(name, []).append(item)
            else:
                fields.setdefault(name, []).append(value)
        recorded = MailgunRequest(domain, endpoint, fields, files, request.headers.get("content-type", ""))
        self.requests.append(recorded)
        failure = self._failures.popleft() if self._failures and self._authorized(request) else None
        if failure is not None and failure.delay:
            await asyncio.sleep(failure.delay)
        response = self._answer(request, recorded, failure)
        recorded.status = response.status_code
        return response

    def _answer(self, request: Request, req: MailgunRequest, failure: _Failure | None) -> Response:
        if not self._authorized(request):
            return PlainTextResponse("Forbidden", status_code=401)
        if req.domain not in self.domains:
            return JSONResponse({"message": f"Domain not found: {req.domain}"}, status_code=404)
        if failure is not None:
            return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)
        if "to" not in req.fields:
            return JSONResponse({"message": "'to' parameter is missing"}, status_code=400)
        if req.endpoint == "messages.mime":
            if "message" not in req.files:
                return JSONResponse({"message": "'message' parameter is missing"}, status_code=400)
        else:
            if "from" not in req.fields:
                return JSONResponse({"message": "'from' parameter is missing"}, status_code=400)
            if "text" not in req.fields and "html" not in req.fields:
                message = "Need at least one of 'text' or 'html' parameters specified"
                return JSONResponse({"message": message}, status_code=400)
        message_id = f"<20240101000000.{len(self.requests)}.abc@{req.domain}>"
        return JSONResponse({"id": message_id, "message": "Queued. Thank you."})


@contextmanager
def mailgun_server(*, api_key: str = "key-test", domains: set[str] | None = None) -> Iterator[FakeMailgun]:
    """Serve a fake Mailgun on a free loopback port for the duration of the block."""
    fake = FakeMailgun(api_key, domains or {"mg.example.com"})
    routes = [
        Route("/v3/{domain}/messages", fake.handle, methods=["POST"]),
        Route("/v3/{domain}/messages.mime", fake.handle, methods=["POST"]),
    ]
    with serve_routes(routes, name="Mailgun") as url:
        fake.url = url
        yield fake
