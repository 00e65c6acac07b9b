"""The public endpoints hit thousands of times a second, answered before the framework's routing.

Tracking pixels (``GET /t/o/<token>``), tracked links (``GET /t/c/<token>``) and Mailgun's webhooks
(``POST /emails/events``, one signed call per request) arrive in bursts as large as the campaigns
that cause them. Measured here, the framework's routing, dependency injection and middleware cost
about 0.8 ms of CPU per request, five times the work of the request itself; these paths skip them and
write through group-commit intakes (tracking.intake), one statement per batch of requests.
Each request is still answered only after its event is committed, counted in the request metrics,
and held to the same body limit and deadline as every other public path. Anything else (another
method, a JSON list of webhook calls) goes on to the routes in api/events.py and api/tracking.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from mailroom.api.metrics import answered
from mailroom.crypto import InvalidToken
from mailroom.errors import MailroomError
from mailroom.tracking.hits import Hit, record_hits
from mailroom.tracking.intake import Intake
from mailroom.tracking.webhooks import REPLAYED, Call, append_calls, receipt, refusal, verified_calls
from mailroom.tracking_links import TrackingTokens

log = logging.getLogger(__name__)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")  # 43 bytes, transparent
NO_STORE = {"Cache-Control": "no-store, private", "Pragma": "no-cache"}
OPEN_PREFIX, CLICK_PREFIX, WEBHOOK_PATH = "/t/o/", "/t/c/", "/emails/events"
# A webhook call is a few KB; Mailgun's largest (a complaint with headers) stays far below this.
WEBHOOK_BODY_LIMIT = 64 * 1024
# The route's answers to one call, encoded once: its event appended, or of a type that is not kept.
_RECEIPTS = {n: orjson.dumps({"code": "OK", "data": receipt(n)}) for n in (0, 1)}


class HotPaths:
    def __init__(self, state: Any) -> None:
        self._state = state  # settings are read from it at each request, as the routes read them
        self.tokens: TrackingTokens = state.tracking_tokens
        self.hits: Intake[Hit, str | None] = Intake(state.engine, record_hits)
        self.calls: Intake[Call, bool] = Intake(state.engine, append_calls)

    async def open_hit(self, token: str, user_agent: str | None, ip: str | None) -> None:
        """Record an open when the token is ours; the pixel shows either way."""
        try:
            email = self.tokens.read_open(token)
        except InvalidToken:
            return
        try:
            await self.hits.submit(Hit("opened", email, None, user_agent, ip))
        except Exception:
            # The image must still show as nothing; an open lost to an outage is not worth a broken image.
            log.warning("could not record an open of email %s", email, exc_info=True)

    async def click_hit(self, token: str, user_agent: str | None, ip: str | None) -> str | None:
        """The link to redirect to, the click recorded; None for a token or link that is not ours."""
        try:
            email, index = self.tokens.read_click(token)
        except InvalidToken:
            return None
        return await self.hits.submit(Hit("clicked", email, index, user_agent, ip)) or None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Answer a hot request (None), or hand back what the app should read the request with."""
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "GET" and path.startswith(OPEN_PREFIX):
            await self._timed(scope, "/t/o/{token}", self._open(scope, send))
            return None
        if method == "GET" and path.startswith(CLICK_PREFIX):
            await self._timed(scope, "/t/c/{token}", self._click(scope, send))
            return None
        settings = self._state.settings
        if method == "POST" and path == WEBHOOK_PATH and settings.mailgun_webhook_signing_key:
            body = await _read(receive, send, settings.body_timeout)
            if body is None:
                return None
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return _replaying(body)  # the route names what is wrong
            if isinstance(parsed, list):
                return _replaying(body)  # several calls: one transaction for all of them, in the route
            await self._timed(scope, WEBHOOK_PATH, self._webhook(parsed, settings.mailgun_webhook_signing_key, send))
            return None
        return receive

    async def _timed(self, scope: Scope, route: str, answer: Awaitable[int]) -> None:
        started = time.perf_counter()
        status = await answer
        answered(scope, route, status, time.perf_counter() - started, self._state.access_log)

    async def _open(self, scope: Scope, send: Send) -> int:
        await self.open_hit(scope["path"][len(OPEN_PREFIX) :], *client_of(scope))
        headers = {"content-type": "image/gif", **NO_STORE}
        return await _answer(send, 200, PIXEL, headers)

    async def _click(self, scope: Scope, send: Send) -> int:
        url = await self.click_hit(scope["path"][len(CLICK_PREFIX) :], *client_of(scope))
        if url is None:
            return await _error(send, 404, "NotFound", "token: no such link")
        return await _answer(send, 302, b"", {"location": url, **NO_STORE})

    async def _webhook(self, body: object, key: str, send: Send) -> int:
        try:
            (call,) = verified_calls(body, key)
        except MailroomError as exc:
            return await _error(send, exc.status, exc.code, exc.message)
        try:
            fresh = await self.calls.submit(call)
        except MailroomError as exc:
            return await _error(send, exc.status, exc.code, exc.message)
        except Exception as exc:
            refused = refusal(exc)
            if refused is not None:
                return await _error(send, refused.status, refused.code, refused.message)
            # Not stored: Mailgun retries a call not answered 2xx.
            log.warning("could not store a webhook call", exc_info=True)
            return await _error(send, 503, "ServiceUnavailable", "the event could not be stored; retry")
        if not fresh:
            return await _error(send, 401, "Unauthorized", REPLAYED)
        return await _answer(send, 200, _RECEIPTS[0 if call.event is None else 1], {"content-type": "application/json"})


def install(app: FastAPI) -> HotPaths:
    hot = HotPaths(app.state)
    app.state.hot_paths = hot
    return hot


def client_of(scope: Scope) -> tuple[str | None, str | None]:
    """The request's user agent and client address, as a tracking hit records them."""
    agent = None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            agent = value.decode("latin-1")
            break
    client = scope.get("client")
    return agent, (client[0] if client else None)


async def _read(receive: Receive, send: Send, deadline: float) -> bytes | None:
    """The whole body, within the limit and the deadline; None once a refusal has been answered."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > WEBHOOK_BODY_LIMIT:
                    await _error(send, 413, "PayloadTooLarge", f"body: larger than {WEBHOOK_BODY_LIMIT} bytes")
                    return None
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        await _error(send, 408, "RequestTimeout", f"body: not received within {deadline:g} s")
        return None


def _replaying(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _answer(send: Send, status: int, body: bytes, headers: dict[str, str]) -> int:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
    return status


async def _error(send: Send, status: int, code: str, message: str) -> int:
    body = orjson.dumps({"code": code, "message": message})
    return await _answer(send, status, body, {"content-type": "application/json"})
