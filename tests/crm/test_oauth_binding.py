"""A mailbox is connected only for the user who asked for the consent link.

The attack: user A asks for a consent link and hands it to somebody else, who approves it with their
own mailbox. Their browser comes back to mailroom with a code for their mailbox and A's state. Nothing
may be stored for A, and the provider must not be asked for a token with that code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid

import pytest
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.oauth_connect import auth_url, come_back, consent, finish, grant_code, pending_states, stored
from tests.support.oauth_server import FakeOAuth
from tests.support.workspace import browser, signed_in
from tests.support.world import World

KINDS = pytest.mark.parametrize("kind", ["google", "microsoft"])
SESSION_COOKIE = "test-session"


class CookieSessions:
    """Browser sessions as a web sign-in would install them: a cookie naming a signed-in user."""

    def __init__(self) -> None:
        self.users: dict[str, uuid.UUID] = {}

    def sign_in(self, user: uuid.UUID) -> str:
        cookie = uuid.uuid4().hex
        self.users[cookie] = user
        return cookie

    async def user_of(self, request: Request, session: AsyncSession) -> uuid.UUID | None:
        return self.users.get(request.cookies.get(SESSION_COOKIE, ""))


def handed_over(page: str) -> dict[str, object]:
    """What the callback page would post to the window that opened the consent screen."""
    found = re.search(r'<script type="application/json" id="handoff">(.*?)</script>', page, re.S)
    assert found, page
    data: dict[str, object] = json.loads(found.group(1))
    return data


@KINDS
async def test_a_consent_link_approved_by_somebody_else_stores_nothing(
    mailroom: World, provider: FakeOAuth, session: AsyncSession, kind: str
) -> None:
    initiator = await mailroom.brand_admin()
    query = await auth_url(initiator, kind, ["mail.send", "mail.modify"])
    # Somebody else approves it as their own mailbox; their browser has no mailroom session, no cookies.
    code = grant_code(provider, kind, query, ["profile", "mail.send", "mail.modify"], "victim@gmail.com")
    mailroom.client.cookies.clear()
    response = await come_back(mailroom.client, kind, code=code, state=query["state"])

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "Nothing was connected" in response.text
    assert await stored(session, kind) == []
    assert provider.requests == [] and provider.profile_reads == []
    # Nothing is spent either: the page is no way for a stranger to cancel the initiator's link.
    assert await pending_states(session) == 1


@KINDS
async def test_a_state_presented_with_another_users_token_is_refused_and_spent(
    mailroom: World, provider: FakeOAuth, session: AsyncSession, kind: str
) -> None:
    initiator = await mailroom.brand_admin()
    other = await mailroom.member(initiator, role="Admin")
    query = await auth_url(initiator, kind)
    code = grant_code(provider, kind, query, ["profile", "mail.send"], "victim@example.com")

    refused = await finish(other, kind, code=code, state=query["state"])
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"].startswith("state: was issued to another user")
    assert await stored(session, kind) == [] and provider.requests == []

    # Spent: not even the user it was issued to can use it now.
    again = await finish(initiator, kind, code=code, state=query["state"])
    assert again.status_code == 400 and again.json()["message"].startswith("state: was used already")
    assert await stored(session, kind) == [] and provider.requests == [] and await pending_states(session) == 0


async def test_finishing_needs_a_token_and_a_well_formed_body(
    mailroom: World, provider: FakeOAuth, session: AsyncSession
) -> None:
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, "google")
    code = grant_code(provider, "google", query, ["profile", "mail.send"], "ann@example.com")
    body = {"code": code, "state": query["state"]}
    anonymous = await mailroom.client.post("/users/self/google/callback", json=body)
    assert anonymous.status_code == 401
    for bad, field in (({"state": query["state"]}, "code"), ({**body, "code": "x" * 5000}, "code")):
        response = await actor.post("/users/self/google/callback", bad)
        assert response.status_code == 400 and response.json()["message"].startswith(f"{field}: "), response.text
    assert await stored(session, "google") == [] and provider.requests == []
    # None of that spent the state: its user still finishes.
    assert (await finish(actor, "google", code=code, state=query["state"])).status_code == 200


@KINDS
async def test_a_browser_signed_in_as_the_initiator_finishes_and_another_is_refused(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession, kind: str
) -> None:
    sessions = CookieSessions()
    oauth_app.state.browser_sessions = sessions
    initiator = await mailroom.brand_admin()
    stranger = await mailroom.brand_admin()

    query = await auth_url(initiator, kind)
    code = grant_code(provider, kind, query, ["profile", "mail.send"], "ann@example.com")
    mailroom.client.cookies.set(SESSION_COOKIE, sessions.sign_in(initiator.user))
    connected = await come_back(mailroom.client, kind, code=code, state=query["state"])
    assert connected.status_code == 200 and "ann@example.com" in connected.text and "is connected" in connected.text
    (row,) = await stored(session, kind)
    assert (row.user, row.brand) == (initiator.user, initiator.brand)

    query = await auth_url(initiator, kind)
    code = grant_code(provider, kind, query, ["profile", "mail.send"], "victim@example.com")
    mailroom.client.cookies.set(SESSION_COOKIE, sessions.sign_in(stranger.user))
    refused = await come_back(mailroom.client, kind, code=code, state=query["state"])
    assert refused.status_code == 400 and refused.json()["message"].startswith("state: was issued to another user")
    assert len(await stored(session, kind)) == 1 and len(provider.requests) == 1
    assert await pending_states(session) == 0
    mailroom.client.cookies.clear()


# What the providers add to their redirect besides code and state; more may come without notice.
PROVIDER_EXTRAS = {
    "google": {
        "scope": "email profile https://www.googleapis.com/auth/gmail.send openid",
        "authuser": "0",
        "hd": "example.com",
        "prompt": "consent",
        "iss": "https://accounts.google.com",
    },
    "microsoft": {"session_state": "5c7e2d40-1c1a-4b2b-9b4e-8d7f0a6e2c11", "client_info": "eyJ1aWQiOiIxIn0"},
}


@KINDS
async def test_what_the_provider_adds_to_its_redirect_is_accepted(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession, kind: str
) -> None:
    sessions = CookieSessions()
    oauth_app.state.browser_sessions = sessions
    initiator = await mailroom.brand_admin()
    query = await auth_url(initiator, kind)
    code = grant_code(provider, kind, query, ["profile", "mail.send"], "ann@example.com")
    mailroom.client.cookies.set(SESSION_COOKIE, sessions.sign_in(initiator.user))
    try:
        connected = await come_back(mailroom.client, kind, code=code, state=query["state"], **PROVIDER_EXTRAS[kind])
    finally:
        mailroom.client.cookies.clear()
    assert connected.status_code == 200 and "is connected" in connected.text, connected.text
    (row,) = await stored(session, kind)
    assert (row.user, row.email) == (initiator.user, "ann@example.com")


async def test_the_page_hands_the_code_only_to_the_configured_app_origin(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession
) -> None:
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, "google")
    code = grant_code(provider, "google", query, ["profile", "mail.send"], "ann@example.com")

    unconfigured = await come_back(mailroom.client, "google", code=code, state=query["state"])
    assert handed_over(unconfigured.text)["origin"] is None

    settings = oauth_app.state.settings
    oauth_app.state.settings = settings.model_copy(update={"app_origin": "https://app.example.com"})
    try:
        page = await come_back(mailroom.client, "google", code=code, state=query["state"])
    finally:
        oauth_app.state.settings = settings
    assert handed_over(page.text) == {
        "origin": "https://app.example.com",
        "message": {"type": "mailroom:oauth", "provider": "google", "code": code, "state": query["state"]},
    }
    # postMessage is addressed to that origin, never to any ("*"), and the page runs only that script.
    (script,) = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    assert "postMessage(data.message,data.origin)" in script and "*" not in script
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = page.headers["content-security-policy"]
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    assert "http" not in page.text.replace("https://app.example.com", "")
    # The app finishes with the user's token.
    assert (await finish(actor, "google", code=code, state=query["state"])).status_code == 200


async def test_text_sent_back_by_the_provider_cannot_break_out_of_the_page(mailroom: World) -> None:
    hostile = "</script><script>alert(1)</script>"
    page = await come_back(mailroom.client, "google", code=hostile, state=hostile)
    assert "<script>alert(1)" not in page.text
    assert handed_over(page.text)["message"] == {
        "type": "mailroom:oauth",
        "provider": "google",
        "code": hostile,
        "state": hostile,
    }


@KINDS
async def test_the_redirect_address_can_be_the_apps_own_page(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession, kind: str
) -> None:
    settings = oauth_app.state.settings
    own_page = f"https://app.example.com/connected/{kind}"
    oauth_app.state.settings = settings.model_copy(update={f"{kind}_redirect_url": own_page})
    try:
        actor = await mailroom.brand_admin()
        query = consent((await actor.get(f"/users/self/{kind}/auth-url?scopes=mail.send")).json()["data"]["url"])
        assert query["redirect_uri"] == own_page
        code = grant_code(provider, kind, query, ["profile", "mail.send"], "ann@example.com")
        assert (await finish(actor, kind, code=code, state=query["state"])).status_code == 200
    finally:
        oauth_app.state.settings = settings
    # The token request names the same redirect address the consent was given for, as OAuth requires.
    (token_request,) = provider.requests
    assert token_request.form["redirect_uri"] == own_page
    assert len(await stored(session, kind)) == 1


async def test_a_browser_signed_in_to_the_workspace_finishes_the_connection_it_asked_for(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession
) -> None:
    initiator = await mailroom.brand_admin()
    stranger = await mailroom.brand_admin()
    query = await auth_url(initiator, "google")
    code = grant_code(provider, "google", query, ["profile", "mail.send"], "ann@example.com")
    async with browser(oauth_app) as web:
        await signed_in(web, oauth_app, stranger.user)
        refused = await come_back(web, "google", code=code, state=query["state"])
    assert refused.status_code == 400 and await stored(session, "google") == []
    query = await auth_url(initiator, "google")
    code = grant_code(provider, "google", query, ["profile", "mail.send"], "ann@example.com")
    async with browser(oauth_app) as web:
        await signed_in(web, oauth_app, initiator.user)
        connected = await come_back(web, "google", code=code, state=query["state"])
    assert connected.status_code == 200 and "is connected" in connected.text
    (row,) = await stored(session, "google")
    assert row.user == initiator.user
