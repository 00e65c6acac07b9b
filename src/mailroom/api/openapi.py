"""What the OpenAPI document says beyond what FastAPI reads off the routes.

Which operations need a bearer token (so Swagger UI's "Authorize" sends it), which read the brand from
the X-Rechat-Brand header, and which failures each can answer with, all as the one error envelope
`{"code", "message"}` (the `Error` schema).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from fastapi import routing
from fastapi.dependencies.models import Dependant
from starlette.routing import BaseRoute

from mailroom.api.auth import BRAND_HEADER, current_caller
from mailroom.api.errors import ERROR_SCHEMA, document_errors

BEARER = "bearerAuth"
ERROR_REF = "#/components/schemas/Error"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# Methods whose requests carry a body: the body limit middleware may refuse any of them with 413.
BODY_METHODS = frozenset({"post", "put", "patch"})

# The upload reads its token inside the handler, so that no database connection is held while the body
# arrives; its dependency tree therefore does not show it.
AUTHENTICATED_IN_HANDLER = frozenset({("POST", "/emails/attachments")})

# Routes that read the brand from the header: whether they require it there, and what it means to them.
_MEMBER = "The brand to act in; the caller must be a member of it."
_OR_BODY = f"{_MEMBER} The body's `brand` may name it instead; when both are given they must agree."
_UPLOAD = (
    "The brand the file belongs to: any of its members may attach it. Without it the file is the uploader's alone."
)
BRAND_HEADER_ROUTES: dict[tuple[str, str], tuple[bool, str]] = {
    ("POST", "/emails"): (False, _OR_BODY),
    ("POST", "/emails/individual"): (False, _OR_BODY),
    ("POST", "/emails/attachments"): (False, _UPLOAD),
    ("GET", "/users/self/google/auth-url"): (True, _MEMBER),
    ("GET", "/users/self/microsoft/auth-url"): (True, _MEMBER),
    ("POST", "/users/self/google-credentials"): (True, _MEMBER),
    ("POST", "/users/self/microsoft-credentials"): (True, _MEMBER),
}

# Where a route answers 409: the state of what it changes, not the input, stands in the way.
CONFLICTS: dict[tuple[str, str], str] = {
    ("POST", "/emails"): "A campaign with this id exists already",
    ("POST", "/emails/individual"): "A campaign with this id exists already",
    ("PUT", "/emails/{id}"): "The campaign has been executed and can no longer change",
    ("POST", "/brands/{brand}/users"): "Another request created an account for this address at the same moment",
    ("POST", "/users/self/email-confirmation"): "The caller's address is confirmed already",
    ("POST", "/emails/{id}/test"): "The caller's address is not confirmed yet",
}

# Where a route answers 429: the caller has done this too often lately.
TOO_MANY: dict[tuple[str, str], str] = {
    ("POST", "/emails/{id}/test"): "The caller has sent as many tests of this campaign as it allows for now",
}

# Public routes (links in mail, the provider's webhook) that answer errors in the envelope.
PUBLIC_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("POST", "/emails/events"): {
        400: "The body is not a batch of Mailgun events",
        401: "The signature is missing or does not match",
        404: "No webhook signing key is configured",
    },
    ("GET", "/t/c/{token}"): {404: "No such link"},
    ("GET", "/emails/view/{token}"): {404: "No such email, or it is no longer archived"},
    ("GET", "/unsubscribe/{token}"): {404: "No such unsubscribe link"},
    ("POST", "/unsubscribe/{token}"): {404: "No such unsubscribe link"},
    ("POST", "/unsubscribe/{token}/undo"): {404: "No such unsubscribe link, or no unsubscribe of it to undo"},
    ("POST", "/users/confirm/{token}"): {404: "No such confirmation link, or it has expired"},
}

# Pages a browser opens that answer some failures as a page (text/html) rather than, or beside, the envelope.
PAGE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("GET", "/users/confirm/{token}"): {404: "The link is not valid or has expired: a page saying so"},
    **{
        ("GET", f"/users/self/{kind}/callback"): {
            400: "The provider answered an error instead of a code: a page saying so, which hands the error "
            "to the app window that opened the consent screen"
        }
        for kind in ("google", "microsoft")
    },
}
_PAGE = {"text/html": {"schema": {"type": "string"}}}

_AUTHENTICATED_ERRORS = {
    400: "Bad input; the message names the field",
    401: "No valid bearer token: send `Authorization: Bearer <API token>`",
    403: "The caller may not do this (not a member of the brand, or not its Admin)",
    404: "No such resource, or none the caller may see",
}
_TOO_LARGE = "The body is larger than this endpoint takes"


def describe_api(schema: dict[str, Any], routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The document FastAPI generated from `routes`, completed; changed in place and returned."""
    document_errors(schema)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = copy.deepcopy(ERROR_SCHEMA)
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token of the calling user (`mailroom token create` or POST /users/self/tokens).",
    }
    authenticated = authenticated_operations(routes) | AUTHENTICATED_IN_HANDLER
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            key = (method.upper(), path)
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if key in authenticated:
                operation["security"] = [{BEARER: []}]
                for status, description in _AUTHENTICATED_ERRORS.items():
                    responses.setdefault(str(status), _error(description, status))
            for status, description in PUBLIC_ERRORS.get(key, {}).items():
                responses.setdefault(str(status), _error(description, status))
            for status, description in PAGE_ERRORS.get(key, {}).items():
                _add_page(responses, str(status), description)
            if key in CONFLICTS:
                responses.setdefault("409", _error(CONFLICTS[key], 409))
            if key in TOO_MANY:
                responses.setdefault("429", _error(TOO_MANY[key], 429))
            if method in BODY_METHODS:
                responses.setdefault("413", _error(_TOO_LARGE, 413))
            if key in BRAND_HEADER_ROUTES:
                _declare_brand_header(operation, *BRAND_HEADER_ROUTES[key])
            _refer_to_error(responses)
            operation["responses"] = dict(sorted(responses.items(), key=lambda item: (not item[0].isdigit(), item[0])))
    return schema


def authenticated_operations(routes: Sequence[BaseRoute]) -> set[tuple[str, str]]:
    """(METHOD, path) of every documented operation whose dependencies include `current_caller`."""
    found = set()
    for path, methods, dependant in _api_routes(routes):
        if _needs_token(dependant):
            found |= {(method, path) for method in methods}
    return found


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, set[str], Dependant]]:
    # FastAPI releases that include routers lazily list them as route contexts, each with the
    # dependencies of its inclusion added to its own.
    iter_contexts = getattr(routing, "iter_route_contexts", None)
    listed: Iterable[Any] = routes if iter_contexts is None else iter_contexts(routes)
    for route in listed:
        original = getattr(route, "original_route", route)
        if isinstance(original, routing.APIRoute) and route.include_in_schema:
            yield route.path_format, set(route.methods), route.dependant


def _needs_token(dependant: Dependant) -> bool:
    return dependant.call is current_caller or any(_needs_token(sub) for sub in dependant.dependencies)


def _error(description: str, status: int) -> dict[str, Any]:
    # 400 keeps the envelope written out in place: the shape document_errors gives every 400, which
    # clients already read.
    schema = copy.deepcopy(ERROR_SCHEMA) if status == 400 else {"$ref": ERROR_REF}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _add_page(responses: dict[str, Any], status: str, description: str) -> None:
    response = responses.get(status)
    if response is None:
        responses[status] = {"description": description, "content": copy.deepcopy(_PAGE)}
        return
    response["description"] = f"{response['description']}; or, as a page: {description}"
    response.setdefault("content", {}).update(copy.deepcopy(_PAGE))


def _refer_to_error(responses: dict[str, Any]) -> None:
    """Routes that wrote the envelope out in their own `responses` point at the component instead."""
    for status, response in responses.items():
        if status == "400":
            continue
        for media in response.get("content", {}).values():
            if media.get("schema") == ERROR_SCHEMA:
                media["schema"] = {"$ref": ERROR_REF}


def _declare_brand_header(operation: dict[str, Any], required: bool, description: str) -> None:
    parameters = [p for p in operation.get("parameters", []) if not _is_brand_header(p)]
    parameters.append(
        {
            "name": BRAND_HEADER,
            "in": "header",
            "required": required,
            "description": description,
            "schema": {"type": "string", "format": "uuid"},
        }
    )
    operation["parameters"] = parameters


def _is_brand_header(parameter: dict[str, Any]) -> bool:
    return parameter.get("in") == "header" and str(parameter.get("name", "")).lower() == BRAND_HEADER.lower()
