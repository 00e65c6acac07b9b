"""A query parameter a route does not read is answered 400 naming it, and changes nothing; the links and
callbacks that others extend take any."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import BaseRoute

from mailroom.api.strict_query import OPEN_QUERY, StrictQueryRoute
from mailroom.links import unsubscribe_token
from tests.support.campaigns import campaign, row_counts
from tests.support.world import World


def refused(response: httpx.Response, name: str) -> str:
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == "BadRequest" and set(answer) == {"code", "message"}
    message: str = answer["message"]
    assert message.startswith(f"{name}: unknown query parameter"), message
    return message


async def test_an_unknown_parameter_on_a_read_is_refused_naming_it(world: World) -> None:
    admin = await world.brand_admin()
    made = admin.data(await admin.post("/emails", campaign()))
    message = refused(await admin.get(f"/emails/{made['id']}", params={"foo": "1"}), "foo")
    assert message.endswith("(this endpoint takes associations[])")
    # A misspelt parameter, among known ones: the answer names it and what the endpoint does take.
    listing = f"/brands/{admin.brand}/emails/campaigns"
    message = refused(await admin.get(listing, params={"status": "any", "limt": "5"}), "limt")
    assert message.endswith("(this endpoint takes status, start, limit, order, associations[])")
    # Even with no value, and on an endpoint that takes none.
    assert refused(await admin.get(f"/brands/{admin.brand}/emails/quota?verbose"), "verbose").endswith("takes none)")
    # A name too long to echo whole is cut.
    assert len(refused(await admin.get(f"/emails/{made['id']}", params={"x" * 5000: "1"}), "x" * 100 + "...")) < 300


async def test_an_unknown_parameter_on_a_write_changes_nothing(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    made = admin.data(await admin.post("/emails", campaign(subject="Kept")))
    before = await row_counts(session)

    refused(await admin.post("/emails", campaign(subject="New"), params={"dry_run": "1"}), "dry_run")
    refused(await admin.put(f"/emails/{made['id']}", campaign(subject="Changed"), params={"notify": "0"}), "notify")
    refused(await admin.put(f"/emails/{made['id']}/notifications", {"status": False}, params={"x": "1"}), "x")
    refused(await admin.delete(f"/emails/{made['id']}", params={"force": "true"}), "force")

    assert await row_counts(session) == before
    kept = admin.data(await admin.get(f"/emails/{made['id']}"))
    assert kept["subject"] == "Kept" and kept["notifications_enabled"] is True and kept["deleted_at"] is None


async def test_refused_before_the_token_is_looked_at(client: httpx.AsyncClient) -> None:
    # Nothing about the caller is needed to know the request is wrong.
    refused(await client.get(f"/emails/{uuid.uuid4()}", params={"foo": "1"}), "foo")


async def test_known_parameters_still_work(world: World) -> None:
    admin = await world.brand_admin()
    made = admin.data(await admin.post("/emails", campaign()))
    recipients = "email_campaign.recipients"
    for params in ({"associations[]": recipients}, {"associations": recipients}):
        assert len(admin.data(await admin.get(f"/emails/{made['id']}", params=params))["recipients"]) == 1
    listed = await admin.get(
        f"/brands/{admin.brand}/emails/campaigns",
        params={"status": "any", "start": 0, "limit": 5, "order": "-created_at", "associations[]": recipients},
    )
    assert [c["id"] for c in admin.data(listed)] == [made["id"]]
    page = await admin.get(f"/emails/{made['id']}/emails", params={"start": 0, "limit": 10, "order": "-opened"})
    assert admin.data(page) == []
    assert admin.data(await admin.get(f"/brands/{admin.brand}/contacts", params={"tag": "Buyer", "limit": 1})) == []
    assert admin.data(await admin.get(f"/brands/{admin.brand}/suppressions", params={"q": "x"})) == []
    # A parameter the route declares is read, and its own rules still apply.
    assert (await admin.get(f"/brands/{admin.brand}/emails/campaigns", params={"limit": "lots"})).status_code == 400


async def test_links_and_callbacks_others_extend_take_any_parameter(
    world: World, app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await world.brand_admin()
    utm = {"utm_source": "newsletter", "utm_medium": "email", "fbclid": "x"}
    token = unsubscribe_token(app.state.secret_box, admin.brand, "jane@example.com")
    assert (await client.get(f"/unsubscribe/{token}", params=utm)).status_code == 200
    # The page's form posts back to the URL it was opened with, parameters and all.
    assert (await client.post(f"/unsubscribe/{token}", params=utm)).status_code == 200
    assert (await client.get("/health", params={"probe": "kubelet"})).status_code == 200
    assert (await client.get("/docs", params={"utm_source": "readme"})).status_code == 200
    for path in (
        "/t/o/not-a-token",
        "/t/c/not-a-token",
        "/emails/view/not-a-token",
        "/users/confirm/not-a-token-at-all",
        "/files/not/a/file",
        "/metrics",
    ):
        assert (await client.get(path, params=utm)).status_code != 400, path
    assert (await client.post("/users/confirm/not-a-token-at-all", params=utm)).status_code != 400


def api_routes(routes: list[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # Included routers and groups of routes hold their routes in one of these.
        inner = getattr(getattr(route, "original_router", route), "routes", None)
        if inner is not None and not isinstance(route, APIRoute):
            yield from api_routes(inner)


async def test_every_route_checks_its_query_against_what_it_declares(app: FastAPI, client: httpx.AsyncClient) -> None:
    routes = list(api_routes(app.router.routes))
    assert len(routes) > 50
    assert [r.path for r in routes if not isinstance(r, StrictQueryRoute)] == []
    checked = {
        (m, r.path_format): r.known_query for r in routes if isinstance(r, StrictQueryRoute) for m in r.methods or ()
    }

    # What is exempt: the table's links and callbacks, and the routes outside the API document.
    open_ = {key for key, known in checked.items() if known is None}
    expected = {(m, path) for path, methods in OPEN_QUERY.items() for m in methods}
    assert expected <= set(checked), expected - set(checked)  # every exempt path is a route
    outside = {(m, r.path_format) for r in routes if not r.include_in_schema for m in r.methods or ()}
    assert open_ == expected | outside

    # Every query parameter the API document names for an operation is one its route accepts.
    document: dict[str, Any] = (await client.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            known = checked[(method.upper(), path)]
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            assert known is None or names <= known, (method, path, names - (known or set()))
            if known is not None:
                assert "400" in operation["responses"], (method, path)
