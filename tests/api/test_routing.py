"""Routes found by their first path segment answer as the full, ordered list of routes would."""

from __future__ import annotations

import re
import uuid

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from mailroom.api.routing import RoutesBySegment


def _app() -> Starlette:
    def route(path: str, name: str, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> PlainTextResponse:
            return PlainTextResponse(f"{name} {sorted(request.path_params.items())}")

        return Route(path, endpoint, methods=methods)

    routes = [
        route("/emails/events", "events", ["POST"]),
        route("/emails/{id}", "campaign", ["GET", "PUT"]),
        route("/{anything}/stats", "anywhere", ["GET"]),
        route("/brands/{brand}/emails", "brand", ["GET"]),
    ]
    app = Starlette()
    app.router.routes[:] = [RoutesBySegment(routes)]
    return app


async def test_the_first_declared_route_of_the_segment_answers() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        assert (await client.post("/emails/events")).text == "events []"
        assert (await client.get("/emails/42")).text == "campaign [('id', '42')]"
        # /emails/events exists for POST only; GET falls through to the next route that fits, as in a list.
        assert (await client.get("/emails/events")).text == "campaign [('id', 'events')]"
        assert (await client.get("/brands/7/emails")).text == "brand [('brand', '7')]"


async def test_a_route_whose_first_segment_is_a_parameter_is_tried_for_every_segment() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        assert (await client.get("/emails/stats")).text == "campaign [('id', 'stats')]"
        assert (await client.get("/brands/stats")).text == "anywhere [('anything', 'brands')]"
        assert (await client.get("/unknown/stats")).text == "anywhere [('anything', 'unknown')]"


async def test_a_known_path_with_another_method_is_405_and_an_unknown_path_404() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        refused = await client.delete("/emails/42")
        assert refused.status_code == 405
        assert set(refused.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PUT"}
        assert (await client.get("/nowhere/at/all")).status_code == 404
        assert (await client.get("/emails")).status_code == 404


async def test_the_service_answers_405_for_a_known_path_and_labels_requests_by_route(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.delete("/notifications")).status_code == 405
    assert (await client.get("/health")).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert 'route="/health"' in metrics


async def test_a_route_of_any_length_declared_first_answers_before_one_of_the_paths_length() -> None:
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.url.path + " " + str(sorted(request.path_params)))

    app = Starlette()
    routes = [
        Route("/files/{rest:path}", endpoint),
        Route("/files/{id}", endpoint),
        Route("/files/{id}/{n:int}", endpoint),
    ]
    app.router.routes[:] = [RoutesBySegment(routes)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/files/x")).text == "/files/x ['rest']"
        assert (await client.get("/files/x/7")).text == "/files/x/7 ['rest']"
        assert (await client.post("/files/x")).status_code == 405


def _linear(routes: list[BaseRoute], scope: Scope) -> tuple[Match, BaseRoute | None]:
    """What the plain ordered list of routes answers: the first full match, else the first partial."""
    partial: tuple[Match, BaseRoute | None] = (Match.NONE, None)
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return match, route
        if match is Match.PARTIAL and partial[0] is Match.NONE:
            partial = (match, route)
    return partial


def test_every_path_of_the_service_finds_the_route_the_full_list_finds(app: FastAPI) -> None:
    (grouped,) = app.router.routes
    assert isinstance(grouped, RoutesBySegment)
    sample = {"uuid": str(uuid.uuid4()), "path": "a/b/c", "int": "7", "str": "x"}
    paths = {"/", "/nowhere", "/emails/", "/emails/x/y/z/w", "/brands//emails/campaigns"}
    for route in grouped.routes:
        path = getattr(route, "path", "/")
        for kind, value in [*sample.items(), ("", "events"), ("", "domain")]:
            paths.add(
                re.sub(
                    r"\{[^}:]+(?::(\w+))?\}", lambda m, k=kind, v=value: v if m[1] in (k, None) else sample[m[1]], path
                )
            )
            paths.add(re.sub(r"\{[^}:]+(?::\w+)?\}", value, path) + "/")
    checked = 0
    for path in sorted(paths):
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"):
            scope: Scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
            match, child = grouped.matches(dict(scope))
            expected = _linear(grouped.routes, dict(scope))
            assert (match, child.get("mailroom.route")) == expected, (method, path)
            checked += 1
    assert checked > 1000
