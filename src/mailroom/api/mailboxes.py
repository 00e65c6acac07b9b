"""Connecting a Gmail or Outlook mailbox through the provider's consent screen (OAuth 2.0 with PKCE).

``GET /users/self/{kind}/auth-url`` answers the URL to open in the user's browser. The provider sends the
browser back with a code and the state, to mailroom's ``GET /users/self/{kind}/callback`` or to an app's
own page (``MAILROOM_{KIND}_REDIRECT_URL``). Either way the code is exchanged only for the user who asked
for the link: through ``POST /users/self/{kind}/callback`` with that user's API token, or on the GET in a
browser signed in to mailroom as that user. A browser signed in as nobody is shown a page that hands the
code and state to the app window that opened it (``MAILROOM_APP_ORIGIN`` only) and stores nothing.
"""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import Field, WithJsonSchema

from mailroom.api.auth import CurrentCaller, brand_from_request
from mailroom.api.browser import browser_user
from mailroom.api.deps import AppSettings, Secrets, Session
from mailroom.api.envelope import Ok, ORJSONResponse, ok
from mailroom.api.handoff_page import handoff_page
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.config import Settings
from mailroom.crm import credentials, oauth
from mailroom.crm.schemas import SCOPES, AuthUrlOut, CredentialOut, credential_out
from mailroom.crypto import SecretBox
from mailroom.errors import BadRequest
from mailroom.transports.oauth import LABELS
from mailroom.validation import Strict, names_pattern

router = APIRouter(tags=["crm"], route_class=StrictQueryRoute)

# The token endpoint and the profile read each answer within seconds; a stuck provider must not hold
# the request (and its transaction) open.
PROVIDER_TIMEOUT = 20.0

# What parse_scopes takes of one value, for the document; parse_scopes words the refusals.
_SCOPES_VALUE = names_pattern(SCOPES, required=True)
ScopesQuery = Annotated[
    list[Annotated[str, WithJsonSchema({"type": "string", "pattern": _SCOPES_VALUE})]],
    Query(
        description="Our scope names, repeated (`scopes=mail.send&scopes=mail.modify`) or comma-separated: "
        + ", ".join(SCOPES),
        min_length=1,
        max_length=len(SCOPES) * 2,
    ),
]
# Provider codes are a few hundred characters and our states about two hundred; the bounds stop junk.
MAX_CODE, MAX_STATE = 4096, 1024
CodeQuery = Annotated[str | None, Query(max_length=MAX_CODE)]
StateQuery = Annotated[str | None, Query(max_length=MAX_STATE)]
ErrorQuery = Annotated[str | None, Query(max_length=200)]


class CallbackIn(Strict):
    code: str = Field(min_length=1, max_length=MAX_CODE, description="The code the provider sent back")
    state: str = Field(min_length=1, max_length=MAX_STATE, description="The state it came back with, as is")


def parse_scopes(values: list[str]) -> list[str]:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
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
        response_model=Ok[AuthUrlOut],
        summary=f"The {label} consent URL that connects a mailbox of the caller (brand from X-Rechat-Brand)",
        description="Open it in the user's browser; it is valid for 10 minutes and works once. The `profile` "
        "scope is always asked for: the mailbox's address is read with it.",
    )
    async def auth_url(
        request: Request,
        caller: CurrentCaller,
        session: Session,
        box: Secrets,
        settings: AppSettings,
        scopes: ScopesQuery,
    ) -> ORJSONResponse:
        wanted = parse_scopes(scopes)
        brand = brand_from_request(request, None)
        url = await oauth.start_connect(
            session, box, settings, user=caller.user.id, brand=brand, kind=kind, scopes=wanted
        )
        return ok(AuthUrlOut(url=url))

    @router.post(
        f"/users/self/{kind}/callback",
        name=f"{kind}_callback_finish",
        response_model=Ok[CredentialOut],
        summary=f"Finish connecting a {label} mailbox with the code and state the provider sent back",
        description="Called with the API token of the user who asked for the consent link (the app's own page "
        "received the provider's redirect). A state issued to another user answers 400 and is spent; nothing "
        "is stored. Answers the credential (without its tokens).",
    )
    async def finish(
        request: Request,
        body: CallbackIn,
        caller: CurrentCaller,
        session: Session,
        box: Secrets,
        settings: AppSettings,
    ) -> ORJSONResponse:
        credential, _ = await _connect(request, session, box, settings, kind, body.code, body.state, caller.user.id)
        return ok(credential_out(credential, kind=kind))

    @router.get(
        f"/users/self/{kind}/callback",
        name=f"{kind}_callback",
        summary=f"Where {label} sends the browser back",
        description="Stores the credential only in a browser signed in to mailroom as the user who asked for "
        "the consent link. Otherwise stores nothing and answers a page that hands the code and state to the "
        "app window that opened the consent screen (MAILROOM_APP_ORIGIN), which finishes with "
        f"`POST /users/self/{kind}/callback`.",
        response_class=HTMLResponse,
        responses={303: {"description": "A consent started from the workspace: back to its mailboxes page"}},
    )
    async def callback(
        request: Request,
        session: Session,
        box: Secrets,
        settings: AppSettings,
        code: CodeQuery = None,
        state: StateQuery = None,
        error: ErrorQuery = None,
    ) -> Response:
        if error is not None:
            # The user declined, or the provider refused the request: nothing to store.
            started_in = oauth.workspace_brand(box, state)
            if started_in is not None:
                return RedirectResponse(workspace_page(started_in, declined=kind), status_code=303)
            message = {"error": error, "state": state}
            notice = f"{label} answered {error!r}: the mailbox was not connected."
            return handoff_page(settings, kind, message, notice, status_code=400)
        if not state:
            raise BadRequest("is required", field="state")
        if not code:
            raise BadRequest("is required", field="code")
        user = await browser_user(request, session)
        if user is None:
            return handoff_page(settings, kind, {"code": code, "state": state}, None)
        credential, pending = await _connect(request, session, box, settings, kind, code, state, user)
        if pending.from_workspace:
            return RedirectResponse(workspace_page(pending.brand, connected=kind), status_code=303)
        return handoff_page(
            settings,
            kind,
            {"credential": str(credential.id)},
            f"Your {label} mailbox {credential.email} is connected. You can close this window.",
        )


async def _connect(
    request: Request,
    session: Session,
    box: SecretBox,
    settings: Settings,
    kind: credentials.Kind,
    code: str,
    state: str,
    user: uuid.UUID,
) -> tuple[credentials.Credential, oauth.PendingConnect]:
    # The state is spent in a transaction of its own, committed before anything else is checked: refused
    # for another user, or for a code the provider turns down, it cannot be tried again.
    async with request.app.state.sessionmaker() as spending, spending.begin():
        pending = await oauth.take_state(spending, box, kind=kind, state=state)
    async with httpx.AsyncClient(timeout=PROVIDER_TIMEOUT) as http:
        credential = await oauth.finish_connect(
            session, box, settings, http, kind=kind, code=code, pending=pending, user=user
        )
    return credential, pending


def workspace_page(brand: uuid.UUID, **outcome: str) -> str:
    """The workspace's mailboxes page of the brand a consent started from, told how it ended."""
    return f"/app/brands/{brand}/mailboxes?{urlencode(outcome)}"


_mailbox_routes("google")
_mailbox_routes("microsoft")
