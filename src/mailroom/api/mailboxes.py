"""Connecting a Gmail or Outlook mailbox through the provider's consent screen (OAuth 2.0 with PKCE).

``GET /users/self/{kind}/auth-url`` answers the URL to open in the user's browser; the provider sends
the browser back to ``GET /users/self/{kind}/callback``, which stores the credential. The callback
takes no API token (a browser follows a redirect): it acts only on what its sealed ``state`` names,
once, for ten minutes.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request

from mailroom.api.auth import BRAND_HEADER, CurrentCaller, brand_from_request
from mailroom.api.deps import AppSettings, Secrets, Session
from mailroom.api.envelope import ORJSONResponse, ok
from mailroom.crm import credentials, oauth
from mailroom.crm.schemas import SCOPES, credential_out
from mailroom.errors import BadRequest
from mailroom.transports.oauth import LABELS

router = APIRouter(tags=["crm"])

# The token endpoint and the profile read each answer within seconds; a stuck provider must not hold
# the request (and its transaction) open.
PROVIDER_TIMEOUT = 20.0

_BRAND_HEADER_PARAM: dict[str, Any] = {
    "parameters": [
        {"name": BRAND_HEADER, "in": "header", "required": True, "schema": {"type": "string", "format": "uuid"}}
    ]
}

ScopesQuery = Annotated[
    list[str] | None,
    Query(
        description="Our scope names, repeated (`scopes=mail.send&scopes=mail.modify`) or comma-separated: "
        + ", ".join(SCOPES),
        max_length=len(SCOPES) * 2,
    ),
]
# Provider codes are a few hundred characters and our states about two hundred; the bounds stop junk.
CodeQuery = Annotated[str | None, Query(max_length=4096)]
StateQuery = Annotated[str | None, Query(max_length=1024)]
ErrorQuery = Annotated[str | None, Query(max_length=200)]


def parse_scopes(values: list[str] | None) -> list[str]:
    names = [name.strip() for value in values or [] for name in value.split(",") if name.strip()]
    if not names:
        raise BadRequest(f"is required: one or more of {', '.join(SCOPES)}", field="scopes")
    unknown = [name for name in names if name not in SCOPES]
    if unknown:
        raise BadRequest(f"unknown scope {unknown[0]!r}: use {', '.join(SCOPES)}", field="scopes")
    return list(dict.fromkeys(names))


def _mailbox_routes(kind: credentials.Kind) -> None:
    """The same two endpoints for Google and Microsoft."""
    label = LABELS[kind]

    @router.get(
        f"/users/self/{kind}/auth-url",
        name=f"{kind}_auth_url",
        summary=f"The {label} consent URL that connects a mailbox of the caller (brand from X-Rechat-Brand)",
        description="Open it in the user's browser; it is valid for 10 minutes and works once. The `profile` "
        "scope is always asked for: the mailbox's address is read with it.",
        openapi_extra=_BRAND_HEADER_PARAM,
    )
    async def auth_url(
        request: Request,
        caller: CurrentCaller,
        session: Session,
        box: Secrets,
        settings: AppSettings,
        scopes: ScopesQuery = None,
    ) -> ORJSONResponse:
        wanted = parse_scopes(scopes)
        brand = brand_from_request(request, None)
        url = await oauth.start_connect(
            session, box, settings, user=caller.user.id, brand=brand, kind=kind, scopes=wanted
        )
        return ok({"url": url})

    @router.get(
        f"/users/self/{kind}/callback",
        name=f"{kind}_callback",
        summary=f"Where {label} sends the browser back; stores the credential the consent granted",
        description="Takes no API token: the `state` names who connects and for which brand. Answers the "
        "credential (without its tokens).",
    )
    async def callback(
        session: Session,
        box: Secrets,
        settings: AppSettings,
        code: CodeQuery = None,
        state: StateQuery = None,
        error: ErrorQuery = None,
    ) -> ORJSONResponse:
        if error is not None:
            # The user declined, or the provider refused the request: nothing to store.
            raise BadRequest(f"{label} answered {error!r}: the mailbox was not connected", field="error")
        if not state:
            raise BadRequest("is required", field="state")
        if not code:
            raise BadRequest("is required", field="code")
        async with httpx.AsyncClient(timeout=PROVIDER_TIMEOUT) as http:
            credential = await oauth.finish_connect(session, box, settings, http, kind=kind, code=code, state=state)
        return ok(credential_out(credential, kind=kind))


_mailbox_routes("google")
_mailbox_routes("microsoft")
