"""The access log: one line a request, gathered in memory and written a few times a second.

uvicorn's access log sends every request through the logging module and writes its line at once.
Under load that cost 60 to 75 µs of CPU per request (`mailroom serve` under wrk, reads' CPU per
request with and without it), a seventh of a small read and more than the rest of the request's
logging, metrics and routing together. Here the line is made directly, its timestamp text once a
second, and what has gathered is written in one call every quarter second (or every thousand lines),
in the format of every other line (logs.write_lines). A stop writes what is left; a process killed
outright loses at most the last quarter second.

Paths keep public-link tokens out (links.redact_path). Answered tracking hits and provider webhooks
come thousands a second: they are counted by route in the request metrics, not logged a line each;
a refused one is logged.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import Scope

from mailroom.links import PROVIDER_WEBHOOKS, redact_path
from mailroom.logs import Line, write_lines

LOGGER = "mailroom.access"
FLUSH_SECONDS = 0.25
MOST_PENDING = 1000
# 15% of the API's CPU when they were logged a line each.
QUIET_WHEN_ANSWERED = ("/t/", *PROVIDER_WEBHOOKS)


class AccessLog:
    def __init__(self) -> None:
        self._pending: list[tuple[float, tuple[str, int] | None, str, str, bytes | None, str, int, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def request(self, scope: Scope, status: int, seconds: float) -> None:
        """Note one answered request (``status`` as sent, ``seconds`` from its start to its answer)."""
        path: str = scope["path"]
        if status < 400 and path.startswith(QUIET_WHEN_ANSWERED):
            return
        # Only what the line needs, kept as it is: it is made into text when written, for all lines at once.
        self._pending.append(
            (
                time.time(),
                scope.get("client"),
                scope["method"],
                path,
                scope.get("query_string"),
                scope.get("http_version", "1.1"),
                status,
                seconds,
            )
        )
        loop = asyncio.get_running_loop()
        if len(self._pending) >= MOST_PENDING:
            self.flush()
        elif self._timer is None or self._timer_loop is not loop:  # none yet, or on a loop now gone
            self._timer, self._timer_loop = loop.call_later(FLUSH_SECONDS, self.flush), loop

    def flush(self) -> None:
        """Write every line gathered so far."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        write_lines(LOGGER, [_line(*request) for request in pending])


def _line(
    created: float,
    client: tuple[str, int] | None,
    method: str,
    path: str,
    query: bytes | None,
    http_version: str,
    status: int,
    seconds: float,
) -> Line:
    target = redact_path(f"{path}?{query.decode('latin-1')}" if query else path)
    who = f"{client[0]}:{client[1]}" if client else "-"
    ms = round(seconds * 1000, 1)
    message = f'{who} - "{method} {target} HTTP/{http_version}" {status} {ms} ms'
    return Line(
        created, message, {"method": method, "path": target, "status": status, "duration_ms": ms, "client": who}
    )
