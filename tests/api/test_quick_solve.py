"""The API's reads and creations solve their parameters without FastAPI's per-request work, and answer exactly
as FastAPI's own handler does: the same data for a request it accepts, the same refusal for one it does not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from mailroom.api.routing import RoutesBySegment
from mailroom.api.strict_query import StrictQueryRoute
from tests.support.campaigns import campaign
from tests.support.world import Actor, World

# The reads API clients poll; each must keep its quick solver.
HOT_READS = {
    "/emails/{id:uuid}",
    "/emails/{campaign:uuid}/emails",
    "/emails/{id}/stats",
    "/brands/{brand}/emails/campaigns",
    "/brands/{brand}/emails/quota",
    "/notifications",
    "/emails",
}


def routes(app: FastAPI) -> list[StrictQueryRoute]:
    (grouped,) = app.router.routes
    assert isinstance(grouped, RoutesBySegment)
    return [r for r in grouped.routes if isinstance(r, StrictQueryRoute)]


@contextmanager
def fastapi_only(app: FastAPI) -> Iterator[None]:
    """Every request solved by FastAPI's own handler, as it was before the quick solver."""
    solvers = [(route, route.quick) for route in routes(app)]
    try:
        for route, _ in solvers:
            route.quick = None
        yield
    finally:
        for route, solver in solvers:
            route.quick = solver


def test_the_hot_reads_and_creations_are_solved_quickly(app: FastAPI) -> None:
    quick = {r.path for r in routes(app) if r.quick is not None}
    assert quick >= HOT_READS
    assert all(r.methods in ({"GET"}, {"POST"}) for r in routes(app) if r.quick is not None)


async def answers(app: FastAPI, actor: Actor, path: str, **kw: Any) -> tuple[httpx.Response, httpx.Response]:
    quick = await actor.get(path, **kw)
    with fastapi_only(app):
        slow = await actor.get(path, **kw)
    return quick, slow


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/emails/{id}", {}),
        ("/emails/{id}", {"associations[]": ["email_campaign.from", "email_campaign.recipients"]}),
        ("/emails/{id}", {"associations": "email_campaign.attachments,email_campaign.template"}),
        ("/emails/{id}", {"associations[]": "email_campaign.nope"}),
        ("/emails/{id}/emails", {"limit": "10", "order": "-opened"}),
        ("/emails/{id}/emails", {"limit": "0"}),
        ("/emails/{id}/emails", {"start": "-1"}),
        ("/emails/{id}/emails", {"limit": "ten"}),
        ("/emails/{id}/emails", {"limit": " 5"}),
        ("/emails/{id}/emails", {"order": "nonsense"}),
        ("/emails/{id}/stats", {}),
        ("/brands/{brand}/emails/campaigns", {"limit": "2", "status": "any", "order": "-created_at"}),
        ("/brands/{brand}/emails/campaigns", {"start": "1", "order": "+due_at"}),
        ("/brands/{brand}/emails/campaigns", {"status": "nope"}),
        ("/brands/{brand}/emails/campaigns", {"limit": "1001"}),
        ("/brands/{brand}/emails/campaigns", {"limit": ""}),
        ("/brands/{brand}/emails/campaigns", {"limit": ["5", "7"]}),
        ("/brands/not-a-uuid/emails/campaigns", {}),
        ("/brands/{brand_hex}/emails/campaigns", {}),
        ("/brands/{brand}/emails/quota", {}),
        ("/notifications", {"start": "1", "limit": "1"}),
        ("/notifications", {"limit": "1e3"}),
    ],
)
async def test_a_quick_answer_is_fastapis_answer(app: FastAPI, world: World, path: str, params: dict[str, Any]) -> None:
    admin = await world.brand_admin()
    for n in range(3):
        admin.data(await admin.post("/emails", campaign(subject=f"Campaign {n}", due_at="2099-01-01T00:00:00Z")))
    made = admin.data(await admin.post("/emails", campaign()))
    url = path.format(id=made["id"], brand=admin.brand, brand_hex=admin.brand.hex)
    quick, slow = await answers(app, admin, url, params=params)
    assert (quick.status_code, quick.headers.get("content-type"), quick.content) == (
        slow.status_code,
        slow.headers.get("content-type"),
        slow.content,
    )


async def test_refusals_of_the_caller_are_fastapis_too(app: FastAPI, world: World) -> None:
    admin = await world.brand_admin()
    other = await world.brand_admin()
    made = admin.data(await admin.post("/emails", campaign()))
    for actor, path, headers in (
        (admin, f"/emails/{made['id']}", {"Authorization": "Bearer mr_not-a-token"}),
        (admin, "/notifications", {"Authorization": ""}),
        (other, f"/emails/{made['id']}", {}),
        (other, f"/emails/{made['id']}/emails", {}),
        (other, f"/brands/{admin.brand}/emails/campaigns", {}),
        (other, f"/brands/{admin.brand}/emails/quota", {}),
    ):
        quick, slow = await answers(app, actor, path, headers=headers)
        assert quick.status_code in (401, 403, 404)
        assert (quick.status_code, quick.content) == (slow.status_code, slow.content)


# What a new campaign's answer holds that differs from one creation to the next.
FRESH = {"id", "created_at", "updated_at"}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (campaign(), "application/json"),
        (campaign(), "application/json; charset=utf-8"),
        (campaign(), "application/vnd.api+json"),
        (campaign(), "text/plain"),
        (campaign(), None),
        (campaign(subject=""), "application/json"),
        (campaign(due_at="tomorrow"), "application/json"),
        (campaign(extra="field"), "application/json"),
        ({"to": [], "subject": "x", "html": "<p>x</p>", "due_at": None}, "application/json"),
        (b'{"subject": "x", "html": NaN}', "application/json"),
        (b'{"subject": "x",', "application/json"),
        (b"", "application/json"),
        (b"[1, 2]", "application/json"),
    ],
)
async def test_a_quick_creation_is_fastapis_creation(
    app: FastAPI, world: World, content: Any, content_type: str | None
) -> None:
    admin = await world.brand_admin()
    raw = content if isinstance(content, bytes) else orjson.dumps(content)
    headers = {"Content-Type": content_type} if content_type else {}

    async def post() -> httpx.Response:
        return await admin.client.post("/emails", content=raw, headers={**admin.headers, **headers})

    quick = await post()
    with fastapi_only(app):
        slow = await post()
    assert quick.status_code == slow.status_code
    if quick.status_code != 200:
        assert quick.content == slow.content
        return
    made, again = quick.json()["data"], slow.json()["data"]
    assert {k: v for k, v in made.items() if k not in FRESH} == {k: v for k, v in again.items() if k not in FRESH}
    assert made["id"] != again["id"]
