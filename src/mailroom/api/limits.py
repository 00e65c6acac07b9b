"""Request bodies are bounded before any route sees them.

An ASGI middleware, so the checks run before FastAPI reads or parses a byte of the body:
- a declared Content-Length over the path's limit is refused at once (413);
- a request with a body to a path that needs a token is refused (401) unless its bearer token is
  valid, so an anonymous client cannot make the server read or parse megabytes;
- the body is read with a running count (413 past the limit, whatever Content-Length said) and an
  overall deadline (408), so a client trickling a byte a second cannot hold a request open.
The body is buffered (it is at most the limit) and replayed to the application, except on paths
that take large files (uploads): there it is passed on as it arrives, with the same running count
and deadline, and the route stores it as it reads it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from mailroom.api.auth import bearer_token
from mailroom.api.envelope import error_body
from mailroom.links import LINK_ONLY_PREFIXES, PROVIDER_WEBHOOKS, WORKSPACE_PREFIX

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Whether a bearer token is live (checked before a body is read).
Authenticate = Callable[[str], Awaitable[bool]]

# Links opened from an email carry their own signed token instead of an API token; their bodies are tiny. So
# are the workspace's forms, which its pages check against the browser's session and CSRF token.
PUBLIC_BODY_LIMIT = 64 * 1024
PUBLIC_PATHS = (*LINK_ONLY_PREFIXES, *PROVIDER_WEBHOOKS, WORKSPACE_PREFIX)


@dataclass(frozen=True)
class BodyLimits:
    default: int
    # (path pattern, limit) for endpoints that take files, checked in order.
    larger: tuple[tuple[re.Pattern[str], int], ...]
    deadline: float
    # (path pattern, limit) for endpoints that read their body as a stream, checked before `larger`.
    streamed: tuple[tuple[re.Pattern[str], int], ...] = ()
    # Seconds a streamed body may take: files of tens of MB take longer than a JSON body on slow links.
    streamed_deadline: float | None = None

    def for_path(self, path: str) -> int:
        # Streamed first: the workspace's compose form is public (its page checks the session) and takes files.
        for pattern, limit in self.streamed:
            if pattern.match(path):
                return limit
        if path.startswith(PUBLIC_PATHS):
            return PUBLIC_BODY_LIMIT
        for pattern, limit in self.larger:
            if pattern.match(path):
                return limit
        return self.default


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: BodyLimits,
        authenticate: Authenticate,
    ) -> None:
        self.app = app
        self.limits = limits
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        # Content-Length: 0 (which clients send with a bodiless DELETE or POST) is no body either: the route
        # answers it, e.g. 405 for a method the path does not take, rather than this middleware with a 401.
        if declared in (None, b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body: nothing to bound
            return
        try:
            if any(pattern.match(scope["path"]) for pattern, _ in self.limits.streamed):
                await self._admit(scope, headers, declared)
                await self._streamed(scope, receive, send)
                return
            body = await self._checked_body(scope, headers, declared, receive)
        except _Refused as refused:
            await _answer(send, refused)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _admit(self, scope: Scope, headers: dict[bytes, bytes], declared: bytes | None) -> None:
        """The checks made before a byte of the body is read: its declared length and the caller's token."""
        path: str = scope["path"]
        limit = self.limits.for_path(path)
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise _Refused(400, "BadRequest", "Content-Length: must be a number") from None
            if length > limit:
                raise _too_large(limit)
        if not path.startswith(PUBLIC_PATHS):
            token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
            if token is None or not await self.authenticate(token):
                raise _Refused(401, "Unauthorized", "Authorization: a valid bearer token is required")

    async def _streamed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app reads the body as it arrives; past the limit or the deadline its read fails, and
        the refusal is answered unless the app has started its own answer."""
        limit = self.limits.for_path(scope["path"])
        seconds = self.limits.streamed_deadline or self.limits.deadline
        deadline = asyncio.get_running_loop().time() + seconds
        size = 0
        started = False

        async def counted() -> Message:
            nonlocal size
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _Refused(408, "RequestTimeout", f"body: must arrive within {seconds:g} seconds") from None
            size += len(message.get("body", b""))
            if size > limit:
                raise _too_large(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _Refused as refused:
            if started:
                raise
            await _answer(send, refused)

    async def _checked_body(
        self, scope: Scope, headers: dict[bytes, bytes], declared: bytes | None, receive: Receive
    ) -> bytes:
        limit = self.limits.for_path(scope["path"])
        too_large = _too_large(limit)
        await self._admit(scope, headers, declared)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.limits.deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Refused(400, "BadRequest", "body: the client went away")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise _Refused(
                408, "RequestTimeout", f"body: must arrive within {self.limits.deadline:g} seconds"
            ) from None
        return b"".join(chunks)


def _too_large(limit: int) -> _Refused:
    return _Refused(413, "PayloadTooLarge", f"body: must be at most {limit} bytes")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the disconnect, as the server would answer

    return replay


async def _answer(send: Send, refused: _Refused) -> None:
    payload = orjson.dumps(error_body(refused.code, refused.message))
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                # The rest of an unread body is still on the wire: the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
