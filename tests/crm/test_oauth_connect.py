"""GET /users/self/{google,microsoft}/auth-url and .../callback: connecting a mailbox through the
provider's consent screen, with a local server speaking the providers' token and profile endpoints.

The code is exchanged only for the user who asked for the consent link: with their API token
(POST .../callback) or in a browser signed in as them (GET .../callback); see test_oauth_binding.py."""

from __future__ import annotations

import base64
import hashlib

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.links import redact_path
from tests.support.oauth_connect import auth_url, come_back, finish, grant_code, pending_states, stored
from tests.support.oauth_server import FakeOAuth
from tests.support.world import World

KINDS = pytest.mark.parametrize("kind", ["google", "microsoft"])
G = "https://www.googleapis.com/auth/"


EXPECTED_SCOPE = {
    "google": f"openid {G}userinfo.profile {G}userinfo.email {G}gmail.send {G}gmail.modify",
    "microsoft": "User.Read Mail.Send Mail.ReadWrite offline_access",
}


@KINDS
async def test_a_mailbox_is_connected_through_the_consent_screen(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession, kind: str
) -> None:
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, kind, ["mail.send", "mail.modify"])

    base = f"{provider.url}/{kind}/auth"
    assert query["client_id"] == provider.clients[kind][0]
    assert query["redirect_uri"] == f"http://mailroom.test/users/self/{kind}/callback"
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["scope"] == EXPECTED_SCOPE[kind]
    if kind == "google":
        assert (query["access_type"], query["prompt"], query["include_granted_scopes"]) == (
            "offline",
            "consent",
            "true",
        )
    assert len(query["code_challenge"]) == 43 and "verifier" not in " ".join(query)
    assert await pending_states(session) == 1

    code = grant_code(provider, kind, query, ["profile", "mail.send", "mail.modify"], "ann.lee@example.com")
    response = await finish(actor, kind, code=code, state=query["state"])
    credential = actor.data(response)

    assert credential["type"] == f"{kind}_credential" and credential["email"] == "ann.lee@example.com"
    assert credential["user"] == str(actor.user) and credential["brand"] == str(actor.brand)
    assert credential["scope_summary"] == ["profile", "mail.read", "mail.send", "mail.modify"]
    assert credential["revoked"] is False and credential["expires_at"] is not None

    # What the token endpoint received: the code, our redirect, our secret, and the verifier of the challenge.
    (token_request,) = provider.requests
    form = token_request.form
    assert form["grant_type"] == "authorization_code" and form["code"] == code
    assert form["redirect_uri"] == query["redirect_uri"]
    assert (form["client_id"], form["client_secret"]) == provider.clients[kind]
    digest = hashlib.sha256(form["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == query["code_challenge"]
    assert form["code_verifier"] not in base and form["code_verifier"] not in query["state"]
    assert provider.profile_reads == [kind]

    (row,) = await stored(session, kind)
    box = oauth_app.state.secret_box
    access, refresh = box.decrypt(bytes(row.access_token)), box.decrypt(bytes(row.refresh_token))
    assert access in provider.access_tokens and refresh in provider.refresh_tokens
    assert access.encode() not in bytes(row.access_token) and access not in response.text
    assert refresh not in response.text
    assert await pending_states(session) == 0


async def test_graph_without_a_mail_address_gives_the_principal_name(
    mailroom: World, provider: FakeOAuth, session: AsyncSession
) -> None:
    provider.graph_mail = False
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, "microsoft", "mail.send,mail.modify")
    code = grant_code(provider, "microsoft", query, ["profile", "mail.send"], "ann@contoso.onmicrosoft.com")
    credential = actor.data(await finish(actor, "microsoft", code=code, state=query["state"]))
    assert credential["email"] == "ann@contoso.onmicrosoft.com"
    # The user unticked mail.modify on the consent screen: what was granted is what is stored.
    assert credential["scope_summary"] == ["profile", "mail.send"]


async def test_a_send_only_gmail_connection_takes_the_address_of_the_id_token(
    mailroom: World, provider: FakeOAuth, session: AsyncSession
) -> None:
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, "google", "mail.send")
    code = grant_code(provider, "google", query, ["profile", "mail.send"], "ann.send@example.com")
    credential = actor.data(await finish(actor, "google", code=code, state=query["state"]))
    # Gmail's profile needs a read scope: it answered 403, and the verified ID token named the address.
    assert provider.profile_reads == ["google"]
    assert credential["email"] == "ann.send@example.com"
    assert credential["scope_summary"] == ["profile", "mail.send"]


async def test_scopes_are_checked_and_comma_separated_ones_accepted(mailroom: World) -> None:
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, "google", "mail.send, calendar")
    assert query["scope"] == f"openid {G}userinfo.profile {G}userinfo.email {G}gmail.send {G}calendar"
    for params in ({"scopes": ["mail.send", "mail.everything"]}, {"scopes": ""}, {}):
        response = await actor.get("/users/self/google/auth-url", params=params)
        assert response.status_code == 400, response.text
        assert response.json()["message"].startswith("scopes: ")
    assert "mail.everything" in (await actor.get("/users/self/google/auth-url?scopes=mail.everything")).text


async def test_the_brand_header_is_needed_and_the_caller_must_be_a_member(mailroom: World) -> None:
    actor = await mailroom.brand_admin()
    other = await mailroom.brand_admin()
    path = "/users/self/microsoft/auth-url?scopes=mail.send"
    foreign = await actor.get(path, headers={"X-Rechat-Brand": str(other.brand)})
    assert foreign.status_code == 403 and foreign.json()["message"].startswith("X-Rechat-Brand: ")
    missing = await actor.client.get(path, headers={"Authorization": f"Bearer {actor.token}"})
    assert missing.status_code == 400 and "X-Rechat-Brand" in missing.json()["message"]
    anonymous = await actor.client.get(path, headers={"X-Rechat-Brand": str(actor.brand)})
    assert anonymous.status_code == 401


@KINDS
async def test_a_server_without_the_provider_configured_names_the_setting(world: World, kind: str) -> None:
    actor = await world.brand_admin()  # the default test app has no OAuth clients
    response = await actor.get(f"/users/self/{kind}/auth-url?scopes=mail.send")
    assert response.status_code == 400
    assert response.json()["message"].startswith(f"{kind}_client_id: is not set")


@KINDS
async def test_forged_expired_foreign_and_replayed_states_are_refused(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession, kind: str
) -> None:
    actor = await mailroom.brand_admin()
    box = oauth_app.state.secret_box
    other = "microsoft" if kind == "google" else "google"
    query = await auth_url(actor, kind)
    code = grant_code(provider, kind, query, ["profile", "mail.send"], "ann@example.com")
    nonce_row = (await session.execute(text("SELECT nonce FROM oauth_states"))).scalar_one()
    await session.commit()

    refused = {
        "forged": "x" * 120,
        "tampered": query["state"][:-2] + ("AA" if not query["state"].endswith("AA") else "BB"),
        "expired": box.seal("oauth-state", {"n": nonce_row, "k": kind}, ttl=-1),
        "another purpose": box.seal("invitation", {"n": nonce_row, "k": kind}, ttl=600),
        "made for the other provider": box.seal("oauth-state", {"n": nonce_row, "k": other}, ttl=600),
        "naming no connection": box.seal("oauth-state", {"n": "nonce-never-issued", "k": kind}, ttl=600),
    }
    for name, state in refused.items():
        response = await finish(actor, kind, code=code, state=state)
        assert response.status_code == 400, name
        assert response.json()["message"].startswith("state: "), name
    assert await stored(session, kind) == [] and provider.requests == []

    assert (await finish(actor, kind, code=code, state=query["state"])).status_code == 200
    replay = await finish(actor, kind, code=code, state=query["state"])
    assert replay.status_code == 400 and replay.json()["message"].startswith("state: was used already")
    assert len(await stored(session, kind)) == 1 and len(provider.requests) == 1


async def test_a_connection_left_open_too_long_is_refused(
    mailroom: World, provider: FakeOAuth, session: AsyncSession
) -> None:
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, "google")
    await session.execute(text("UPDATE oauth_states SET expires_at = now() - interval '1 second'"))
    await session.commit()
    code = grant_code(provider, "google", query, ["profile", "mail.send"], "ann@example.com")
    response = await finish(actor, "google", code=code, state=query["state"])
    assert response.status_code == 400 and response.json()["message"].startswith("state: ")
    assert await stored(session, "google") == [] and provider.requests == []


@KINDS
async def test_a_code_redeemed_with_another_verifier_is_refused(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession, kind: str
) -> None:
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, kind)
    # The code was issued for another connection's challenge (an intercepted code replayed here).
    code = provider.issue_code(
        kind,
        scopes=["profile", "mail.send"],
        redirect_uri=query["redirect_uri"],
        code_challenge=(await auth_url(actor, kind))["code_challenge"],
        email="ann@example.com",
    )
    response = await finish(actor, kind, code=code, state=query["state"])
    assert response.status_code == 400 and response.json()["message"].startswith("code: ")
    (token_request,) = provider.requests
    assert token_request.status == 400
    assert await stored(session, kind) == []


@KINDS
async def test_a_refused_consent_stores_nothing(
    mailroom: World, provider: FakeOAuth, session: AsyncSession, kind: str
) -> None:
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, kind)
    response = await come_back(
        actor.client, kind, error="access_denied", error_description="The user denied access", state=query["state"]
    )
    # A browser is answered a page: it says so, and hands the refusal to the app that opened the consent.
    assert response.status_code == 400 and response.headers["content-type"].startswith("text/html")
    assert "access_denied" in response.text and "not connected" in response.text
    assert provider.requests == [] and await stored(session, kind) == []
    missing = await come_back(actor.client, kind, state=query["state"])
    assert missing.status_code == 400 and missing.json()["message"].startswith("code: ")


async def test_a_failing_token_endpoint_is_a_bad_gateway_and_stores_nothing(
    mailroom: World, provider: FakeOAuth, session: AsyncSession
) -> None:
    actor = await mailroom.brand_admin()
    query = await auth_url(actor, "google")
    code = grant_code(provider, "google", query, ["profile", "mail.send"], "ann@example.com")
    provider.fail_next(1, 503, headers={"Retry-After": "5"})
    response = await finish(actor, "google", code=code, state=query["state"])
    assert response.status_code == 502 and response.json()["message"].startswith("code: ")
    assert await stored(session, "google") == []


async def test_a_user_who_left_the_brand_cannot_finish_connecting(
    mailroom: World, provider: FakeOAuth, session: AsyncSession
) -> None:
    admin = await mailroom.brand_admin()
    agent = await mailroom.member(admin)
    query = await auth_url(agent, "google")
    await session.execute(text('DELETE FROM brand_members WHERE "user" = :user'), {"user": agent.user})
    await session.commit()
    code = grant_code(provider, "google", query, ["profile", "mail.send"], "agent@example.com")
    response = await finish(agent, "google", code=code, state=query["state"])
    assert response.status_code == 403 and await stored(session, "google") == []


def test_the_callback_code_and_state_are_kept_out_of_access_logs() -> None:
    logged = redact_path("/users/self/google/callback?code=4/0Ab-SECRET&state=SEALED")
    assert "SECRET" not in logged and "SEALED" not in logged
    assert logged == "/users/self/google/callback<redacted>"
