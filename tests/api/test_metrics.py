"""GET /metrics: what an operator's Prometheus sees after a campaign went out, and who may see it."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from mailroom.api.metrics import METHODS
from mailroom.config import Settings
from tests.support.apps import app_client
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(body: str, name: str, **labels: str) -> float:
    return samples(body).get((name, frozenset(labels.items())), 0.0)


async def test_a_scrape_reports_the_campaign_the_worker_sent(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient
) -> None:
    admin = await world.brand_admin()
    await world.contacts(
        admin,
        [{"emails": ["ann@example.com"], "tags": ["t"]},
         {"emails": ["bob@example.com"], "tags": ["t"]},
         {"emails": ["gone@example.com"], "tags": ["t"]}],
    )  # fmt: skip
    made = admin.data(
        await admin.post(
            "/emails/individual",
            {
                "subject": "News",
                "html": "<p>Hello</p>",
                "to": [{"recipient_type": "Tag", "tag": "t"}],
                "due_at": datetime.now(UTC).isoformat(),
            },
        )
    )
    with smtp_server() as server:
        server.refuse("gone@example.com")
        async with app_client(settings, transport="smtp", smtp_url=server.url) as ops:
            before = (await ops.get("/metrics")).text
            async with running_worker(settings, transport="smtp", smtp_url=server.url):
                state = await wait_until_sent(app.state.sessionmaker, made["id"])
            assert state["sent"] == 2 and state["failed"] == 1
            assert (await admin.get(f"/emails/{made['id']}")).status_code == 200
            scraped = await ops.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    body = scraped.text
    assert value(body, "mailroom_campaigns_executed_total") == 1
    assert value(body, "mailroom_campaigns_failed_total") == 0
    assert value(body, "mailroom_messages_sent_total", transport="smtp") == 2
    assert value(body, "mailroom_messages_failed_total", transport="smtp") == 1
    assert value(body, "mailroom_send_jobs", state="waiting") == 0
    assert value(body, "mailroom_send_jobs", state="running") == 0
    # The one batch was observed, under a minute after it was due.
    latency_count = "mailroom_send_latency_seconds_count"
    assert value(body, latency_count) - value(before, latency_count) == 1
    under_a_minute = "mailroom_send_latency_seconds_bucket"
    assert value(body, under_a_minute, le="60.0") - value(before, under_a_minute, le="60.0") == 1
    # Requests are counted under their route pattern; no id (nor token) from a raw path appears.
    request = ("mailroom_http_requests_total", {"method": "GET", "route": "/emails/{id}", "status": "200"})
    assert value(body, request[0], **request[1]) - value(before, request[0], **request[1]) == 1
    assert made["id"] not in body


async def test_queued_send_jobs_are_reported_waiting(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    await world.contacts(admin, [{"emails": [f"r{i}@example.com"], "tags": ["t"]} for i in range(3)])
    made = admin.data(
        await admin.post(
            "/emails/individual",
            {"subject": "S", "html": "<p>x</p>", "to": [{"recipient_type": "Tag", "tag": "t"}],
             "due_at": datetime.now(UTC).isoformat()},
        )
    )  # fmt: skip
    # Execute only (no job runner): the batches wait in the queue.
    from mailroom.sending.jobs import execute_due_campaigns

    assert await execute_due_campaigns(app.state.sessionmaker, slice_size=2) == 2
    async with app_client(settings) as ops:
        body = (await ops.get("/metrics")).text
    assert value(body, "mailroom_send_jobs", state="waiting") == 2
    assert value(body, "mailroom_campaigns_executed_total") == 1
    assert made["id"] not in body


async def test_without_a_token_only_loopback_clients_may_scrape(settings: Settings) -> None:
    for peer in ("127.0.0.1", "127.8.9.10", "::1"):
        async with app_client(settings, peer=peer) as ops:
            assert (await ops.get("/metrics")).status_code == 200, peer
    for peer in ("203.0.113.7", "10.0.0.2", "::ffff:203.0.113.7"):
        async with app_client(settings, peer=peer) as ops:
            answer = await ops.get("/metrics")
        assert answer.status_code == 403, peer
        assert answer.json()["code"] == "Forbidden" and "MAILROOM_METRICS_TOKEN" in answer.json()["message"]


async def test_with_a_token_every_client_needs_it(settings: Settings) -> None:
    token = "s3cret-metrics-token"
    for peer in ("127.0.0.1", "203.0.113.7"):
        async with app_client(settings, peer=peer, metrics_token=token) as ops:
            assert (await ops.get("/metrics")).status_code == 401
            wrong = await ops.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["message"].startswith("Authorization:")
            assert (await ops.get("/metrics", headers={"Authorization": f"Basic {token}"})).status_code == 401
            right = await ops.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert right.status_code == 200 and "mailroom_campaigns_executed_total" in right.text


async def test_client_chosen_methods_and_paths_make_no_new_series(settings: Settings) -> None:
    async with app_client(settings) as ops:
        for n in range(5):
            await ops.request(f"BREW{n}", f"/unsubscribe/secret-token-{n}")
            await ops.get(f"/no/such/path/{n}")
        body = (await ops.get("/metrics")).text
    assert "BREW" not in body and "secret-token" not in body and "/no/such" not in body
    series = {labels for name, labels in samples(body) if name == "mailroom_http_requests_total"}
    # Other tests in the process send PUT, DELETE, ...: only the known methods and OTHER may appear.
    assert all(dict(labels)["method"] in {*METHODS, "OTHER"} for labels in series)
    assert value(body, "mailroom_http_requests_total", method="GET", route="<unmatched>", status="404") >= 5
