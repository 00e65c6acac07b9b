"""A query parameter a route does not read is answered 400, naming it.

Ignored, a misspelt parameter (`limt=10`, `asociations[]=...`) gets the client an answer to a question it
did not ask, and nothing tells it so. Every router builds its routes with ``StrictQueryRoute``: the names a
route reads are taken once, when it is built, from its dependency tree (aliases such as `associations[]`
included), so a request pays a set comparison, and nothing at all without a query string.

Links and callbacks that others extend are exempt; so are the routes outside the API document (the docs page
and its assets, /metrics), which browsers and scrapers call, not API clients.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, get_type_hints

from fastapi import Request, Response, params
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute

from mailroom.api.quick_solve import Solver, quick_solver
from mailroom.errors import BadRequest

GET, POST = frozenset({"GET"}), frozenset({"POST"})
# Routes (by path) and the methods on which they take any query parameter.
OPEN_QUERY: dict[str, frozenset[str]] = {
    # The providers send the browser back with more than code and state: Google adds scope, authuser,
    # prompt and hd, Microsoft session_state, and either may add more without notice.
    "/users/self/google/callback": GET,
    "/users/self/microsoft/callback": GET,
    # Links in mail: mail clients, link scanners and campaign tools add utm_* and their own parameters. The
    # confirmation and unsubscribe pages' forms post back to the very URL the page was opened with.
    "/t/o/{token}": GET,
    "/t/c/{token}": GET,
    "/emails/view/{token}": GET,
    "/unsubscribe/{token}": GET | POST,
    "/users/confirm/{token}": GET | POST,
    "/files/{path}": GET,
    # Mailgun's webhook: most calls are answered before routing (api/hot_paths.py), where no query is
    # read; a route that refused what that path accepts would refuse by the body's shape.
    "/emails/events": POST,
    # Load balancers' and orchestrators' probes.
    "/health": GET,
}
# A client's parameter name is echoed in the message; this bounds how much of it.
SHOWN = 100

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def query_names(dependant: Dependant) -> tuple[frozenset[str], list[str]]:
    """The query parameters a route reads, by the names a client sends (aliases), and those of them the
    OpenAPI document shows, in order."""
    known: set[str] = set()
    documented: dict[str, None] = {}
    for field in get_flat_params(dependant):
        if isinstance(field.field_info, params.Query):
            known.add(field.alias)
            if field.field_info.include_in_schema:
                documented[field.alias] = None
    return frozenset(known), list(documented)


class StrictQueryRoute(APIRoute):
    """An APIRoute that answers 400 to a query parameter it does not declare, before anything else is read."""

    # The names this route accepts; None when it takes any.
    known_query: frozenset[str] | None = None
    # How its parameters are solved without FastAPI's per-request work; None when FastAPI solves them.
    quick: Solver | None = None

    def get_route_handler(self) -> Handler:
        handler = self.quick_handler(super().get_route_handler())
        if not self.include_in_schema or (self.methods or set()) <= OPEN_QUERY.get(self.path_format, frozenset()):
            self.known_query = None
            return handler
        known, documented = query_names(self.dependant)
        self.known_query = known
        takes = f"this endpoint takes {', '.join(documented)}" if documented else "this endpoint takes none"

        async def checked(request: Request) -> Response:
            if request.scope["query_string"]:
                names = request.query_params.keys()
                if not known.issuperset(names):
                    name = next(n for n in names if n not in known)
                    shown = name if len(name) <= SHOWN else name[:SHOWN] + "..."
                    raise BadRequest(f"unknown query parameter ({takes})", field=shown)
            return await handler(request)

        return checked

    def quick_handler(self, handler: Handler) -> Handler:
        """The route's handler, trying ``quick_solve`` first on an API GET or POST whose endpoint answers a
        Response of its own; FastAPI's handler answers whatever that leaves (see api/quick_solve.py)."""
        endpoint = self.endpoint
        try:
            answers = get_type_hints(endpoint).get("return")
        except (NameError, TypeError):
            return handler
        if not (
            self.include_in_schema
            and self.methods in (GET, POST)
            and inspect.iscoroutinefunction(endpoint)
            and isinstance(answers, type)
            and issubclass(answers, Response)
        ):
            return handler
        self.quick = quick_solver(self.dependant, embedded_body=self._embed_body_fields)
        if self.quick is None:
            return handler

        async def quickly(request: Request) -> Response:
            solver = self.quick  # read at each request: None hands every request to FastAPI
            if solver is not None:
                async with AsyncExitStack() as stack:
                    values = await solver(request, stack)
                    if values is not None:
                        response: Response = await endpoint(**values)
                        return response
            return await handler(request)

        return quickly
