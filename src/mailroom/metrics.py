"""Metrics counted inside a process: HTTP requests and send latency.

Totals that every worker machine contributes to (campaigns, messages, queued jobs) are not counted
here: they are read from the database when /metrics is scraped (see api/metrics.py), the one place
all machines share. What is counted here lives in this process; `mailroom serve` points
PROMETHEUS_MULTIPROC_DIR at a directory under the data dir (see cli.py) before anything imports
prometheus_client, so its worker child's counts reach the API's scrape too.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "mailroom_http_requests",
    "HTTP requests answered, by method, route pattern (never the raw path) and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "mailroom_http_request_duration_seconds",
    "Seconds from a request's arrival to the end of its answer, by method and route pattern.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
# Observed once per send batch when its outcome is recorded: a campaign's last batch marks when
# all of it went out, and a slow or retried batch shows up on its own instead of being averaged in.
SEND_LATENCY = Histogram(
    "mailroom_send_latency_seconds",
    "Seconds from a campaign's due_at to the moment one of its batches was sent and recorded.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 24 * 3600),
)


@functools.cache
def _request_series(method: str, route: str, status: int) -> tuple[Any, Any]:
    # Bounded as the series are: a known method (or OTHER), a route pattern, a status.
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_LATENCY.labels(method, route)


def count_request(method: str, route: str, status: int, seconds: float) -> None:
    """One answered request in the HTTP series. Each series is looked up once per process: labels() takes
    a lock and builds its key at every call."""
    requests, latency = _request_series(method, route, status)
    requests.inc()
    latency.observe(seconds)
