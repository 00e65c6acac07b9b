"""GET /metrics in the Prometheus text format, and the middleware that counts HTTP requests.

Campaign, message and queue figures are read from the database at scrape time with two small
statements: every worker, on whatever machine, records its outcomes there, so any API process
answers the same totals, and a worker that dies loses none of them. Counts kept in memory (HTTP
requests, send latency) come from this process, plus its `mailroom serve` worker child when
PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.api.access_log import AccessLog
from mailroom.api.limits import ASGIApp, Message, Receive, Scope, Send
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.campaigns.reads import campaign_totals
from mailroom.config import Settings
from mailroom.errors import Forbidden, Unauthorized
from mailroom.metrics import count_request
from mailroom.sending.execute import send_jobs
from mailroom.transports.registry import transport_name

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Requests no route matched share one label: their raw paths are unbounded and may carry tokens.
UNMATCHED = "<unmatched>"
# The method is the client's to choose: any other one is counted as OTHER, or each would be a new series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def database_families(sessionmaker: async_sessionmaker[AsyncSession], transport: str) -> list[Metric]:
    async with sessionmaker() as session:
        totals = await campaign_totals(session)
        jobs = await send_jobs(session)
    executed = CounterMetricFamily("mailroom_campaigns_executed", "Campaigns executed (claimed and expanded).")
    executed.add_metric([], totals.executed)
    failed = CounterMetricFamily("mailroom_campaigns_failed", "Campaigns that failed as a whole.")
    failed.add_metric([], totals.failed)
    sent = CounterMetricFamily(
        "mailroom_messages_sent", "Recipients whose mail a transport accepted.", labels=["transport"]
    )
    sent.add_metric([transport], totals.messages_sent)
    refused = CounterMetricFamily(
        "mailroom_messages_failed", "Recipients whose mail was refused for good.", labels=["transport"]
    )
    refused.add_metric([transport], totals.messages_failed)
    queued = GaugeMetricFamily("mailroom_send_jobs", "Send jobs by state (waiting or running).", labels=["state"])
    queued.add_metric(["waiting"], jobs.waiting)
    queued.add_metric(["running"], jobs.running)
    return [executed, failed, sent, refused, queued]


def _process_metrics() -> bytes:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_access(request: Request, settings: Settings) -> None:
    token = settings.metrics_token
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise Unauthorized("a valid bearer token (MAILROOM_METRICS_TOKEN) is required", field="Authorization")
    elif not _is_loopback(request.client.host if request.client else None):
        # Without a token the figures are for the machine's own scraper only.
        raise Forbidden("metrics answer only to loopback clients unless MAILROOM_METRICS_TOKEN is set")


router = APIRouter(route_class=StrictQueryRoute)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    _check_access(request, settings)
    families = await database_families(request.app.state.sessionmaker, transport_name(settings))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return Response(_process_metrics() + generate_latest(registry), media_type=CONTENT_TYPE)


class RequestMetrics:
    """Counts and times every HTTP request under its route pattern (`/emails/{id}`), set by the router, and
    notes it in the access log (None: not kept)."""

    def __init__(self, app: ASGIApp, access_log: AccessLog | None) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The pattern as the document writes it: `/emails/{id}`, not the `{id:uuid}` the route matches with.
            route = getattr(scope.get("route"), "path_format", None) or UNMATCHED
            answered(scope, route, status, time.perf_counter() - started, self.access_log)


def answered(scope: Scope, route: str, status: int, seconds: float, access_log: AccessLog | None) -> None:
    """One request answered, here or on a hot path: counted under its route pattern and noted in the access
    log (None: not kept)."""
    method = scope.get("method")
    count_request(method if method in METHODS else "OTHER", route, status, seconds)
    if access_log is not None:
        access_log.request(scope, status, seconds)
