"""The one place exceptions become HTTP answers. No input may produce a 500 with internals in it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.convertors import UUIDConvertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, compile_path

from mailroom.api.envelope import ORJSONResponse, error_body
from mailroom.errors import MailroomError

log = logging.getLogger(__name__)

_LOCATION_ROOTS = {"body", "query", "path", "header"}


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATION_ROOTS:
        parts = parts[1:]
    # Pydantic names union branches and function validators in the location; they mean nothing to users.
    parts = [p for p in parts if not p.startswith(("function-", "tagged-union", "union["))]
    return ".".join(parts)


def validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "body: invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "body: malformed JSON"
    message = str(first.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ")
    field = _field_of(tuple(first.get("loc", ())))
    # Model-level checks name their fields in the message itself.
    if field:
        return f"{field}: {message}"
    return message if ": " in message else f"body: {message}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MailroomError)
    async def domain_error(_: Request, exc: MailroomError) -> ORJSONResponse:
        return ORJSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        return ORJSONResponse(error_body("BadRequest", validation_message(exc)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        if exc.status_code == 404 and (name := malformed_uuid(request)) is not None:
            return ORJSONResponse(error_body("BadRequest", f"{name}: {NOT_A_UUID}"), status_code=400)
        code = {404: "ResourceNotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        headers = exc.headers
        if exc.status_code == 405:
            # HTTP asks a 405 to name the methods the path takes; Starlette names those of one route only.
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return ORJSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> ORJSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return ORJSONResponse(error_body("InternalError", "internal error"), status_code=500)


def allowed_methods(request: Request) -> str:
    """Every method of every route whose path matches the request's, e.g. "GET, POST"."""
    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


NOT_A_UUID = "must be a UUID (8-4-4-4-12 hex digits)"
_UUID = re.compile(UUIDConvertor.regex)


def malformed_uuid(request: Request) -> str | None:
    """The path parameter that alone kept a route taking this method from matching: one declared `{name:uuid}`
    (so that a sibling path such as /emails/events is not taken for an id) that holds something else.

    Without this a mistyped id would be answered as an unknown path; it is named, as a bad id in the body is.
    """
    path = request.scope["path"]
    for route in _leaf_routes(request.app.router.routes):
        template = getattr(route, "path", "")
        if ":uuid}" not in template or request.method not in (getattr(route, "methods", None) or ()):
            continue
        found = _any_segment(template).match(path)
        if found is None:
            continue
        for name, value in found.groupdict().items():
            if f"{{{name}:uuid}}" in template and not _UUID.fullmatch(value):
                return name
    return None


@cache
def _any_segment(template: str) -> re.Pattern[str]:
    """The route's path with its uuid parameters taking any one segment."""
    return compile_path(template.replace(":uuid}", "}"))[0]


def _leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        # An included router (FastAPI wraps it) or a group of routes stands for the routes inside it.
        inner = getattr(getattr(route, "original_router", route), "routes", None)
        if inner is None:
            yield route
        else:
            yield from _leaf_routes(inner)


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["code", "message"],
}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Show bad input as what it is answered with: 400 and {code, message}, not FastAPI's 422 shape."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses["400"] = {
                    "description": "Bad input; the message names the field",
                    "content": {"application/json": {"schema": ERROR_SCHEMA}},
                }
    return schema
