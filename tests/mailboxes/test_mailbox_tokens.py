"""StoredTokens: a stored credential's access token, refreshed once when it expires, and a revoked
access turned into a failure the user can act on. The provider is a local token endpoint."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.mailboxes.tokens import StoredTokens
from mailroom.transports.base import PermanentSendError, TransientSendError
from mailroom.transports.oauth import Kind, OAuthClient
from tests.support.campaigns import campaign
from tests.support.oauth_server import FakeOAuth, oauth_server
from tests.support.world import Actor, World

KINDS = pytest.mark.parametrize("kind", ["google", "microsoft"])
TABLES = {"google": "google_credentials", "microsoft": "microsoft_credentials"}
MAILBOX = {"google": "Gmail", "microsoft": "Outlook"}
PROVIDER = {"google": "Google", "microsoft": "Microsoft"}


@pytest.fixture
def provider() -> Iterator[FakeOAuth]:
    with oauth_server() as fake:
        yield fake


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


class Mailbox:
    """A credential stored through the API with tokens the fake provider issued."""

    def __init__(self, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient, kind: Kind) -> None:
        self.app, self.provider, self.http, self.kind = app, provider, http, kind
        self.id = uuid.UUID(int=0)
        self.email = ""
        self.access = self.refresh = ""

    async def create(self, world: World, actor: Actor, *, expires_in: float) -> Mailbox:
        self.email = f"ann-{uuid.uuid4().hex[:6]}@example.com"
        self.access, self.refresh = self.provider.grant(
            self.kind, email=self.email, scopes=["profile", "mail.send", "mail.modify"]
        )
        fields: dict[str, Any] = {
            "email": self.email,
            "access_token": self.access,
            "refresh_token": self.refresh,
            "expires_at": (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat(),
        }
        make = world.google_credential if self.kind == "google" else world.microsoft_credential
        self.id = uuid.UUID(await make(actor, **fields))
        return self

    def tokens(self) -> StoredTokens:
        """A token source as one sending worker holds it."""
        oauth = OAuthClient.from_settings(self.provider.settings(self.app.state.settings), self.kind)
        return StoredTokens(
            self.app.state.sessionmaker,
            self.app.state.secret_box,
            oauth,
            self.http,
            kind=self.kind,
            credential_id=self.id,
        )

    async def row(self, session: AsyncSession) -> Any:
        result = await session.execute(text(f"SELECT * FROM {TABLES[self.kind]} WHERE id = :id"), {"id": self.id})
        row = result.one()
        await session.commit()  # the next read sees what workers committed since
        return row

    def decrypt(self, value: Any) -> str | None:
        box = self.app.state.secret_box
        return None if value is None else box.decrypt(bytes(value))


async def mailbox(
    world: World, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient, kind: Kind, *, expires_in: float
) -> tuple[Actor, Mailbox]:
    actor = await world.brand_admin()
    return actor, await Mailbox(app, provider, http, kind).create(world, actor, expires_in=expires_in)


@KINDS
async def test_a_token_that_is_still_good_is_used_without_calling_the_provider(
    world: World, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient, kind: Kind
) -> None:
    _, box = await mailbox(world, app, provider, http, kind, expires_in=3000)
    tokens = box.tokens()
    assert await tokens.access_token() == box.access
    assert await tokens.access_token() == box.access
    assert provider.requests == []


@KINDS
async def test_an_expiring_token_is_refreshed_and_the_new_one_stored_encrypted(
    world: World, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient, session: AsyncSession, kind: Kind
) -> None:
    _, box = await mailbox(world, app, provider, http, kind, expires_in=30)  # inside the 60 s margin
    before = datetime.now(UTC)

    token = await box.tokens().access_token()

    assert token != box.access and provider.access_tokens[token] == box.email
    (request,) = provider.requests
    assert request.form["grant_type"] == "refresh_token" and request.form["refresh_token"] == box.refresh
    assert (request.form["client_id"], request.form["client_secret"]) == provider.clients[kind]
    row = await box.row(session)
    assert box.decrypt(row.access_token) == token and token.encode() not in bytes(row.access_token)
    assert before + timedelta(seconds=3590) < row.expires_at < datetime.now(UTC) + timedelta(seconds=3600)
    stored_refresh = box.decrypt(row.refresh_token)
    if kind == "google":  # Google answers no new refresh token: the one we had stays
        assert stored_refresh == box.refresh
    else:  # Microsoft rotates it: the new one is kept for the next refresh
        assert stored_refresh != box.refresh and stored_refresh in provider.refresh_tokens


@KINDS
async def test_concurrent_sends_on_one_credential_refresh_once(
    world: World, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient, kind: Kind
) -> None:
    _, box = await mailbox(world, app, provider, http, kind, expires_in=-10)
    provider.refresh_delay = 0.2  # every worker asks while the first refresh is in flight
    workers = [box.tokens() for _ in range(6)]

    tokens = await asyncio.gather(*(worker.access_token() for worker in workers for _ in range(3)))

    assert len(set(tokens)) == 1 and tokens[0] != box.access
    assert provider.refreshes(kind) == 1 and len(provider.requests) == 1


async def test_a_refused_token_is_refreshed_once_for_every_worker_that_held_it(
    world: World, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient
) -> None:
    _, box = await mailbox(world, app, provider, http, "microsoft", expires_in=3000)
    first, second = box.tokens(), box.tokens()
    assert await first.access_token() == await second.access_token() == box.access

    # The provider answered 401 to both: the first refreshes, the second finds the new token stored.
    renewed = await first.access_token(refresh=True)
    assert renewed != box.access
    assert await second.access_token(refresh=True) == renewed
    assert provider.refreshes() == 1
    # Refused again (the renewed token too): a new refresh, with the rotated refresh token.
    assert await second.access_token(refresh=True) not in (renewed, box.access)
    assert provider.refreshes() == 2 and provider.requests[1].form["refresh_token"] != box.refresh


@KINDS
async def test_revoked_access_marks_the_credential_and_names_the_reconnect(
    world: World, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient, session: AsyncSession, kind: Kind
) -> None:
    actor, box = await mailbox(world, app, provider, http, kind, expires_in=-10)
    body = campaign(**{f"{kind}_credential": str(box.id)})
    assert (await actor.post("/emails", body)).status_code == 200
    provider.revoke(box.refresh)  # the user removed mailroom's access in their account settings

    with pytest.raises(PermanentSendError) as failure:
        await box.tokens().access_token()

    assert failure.value.reason == (
        f"{PROVIDER[kind]} no longer accepts mailroom's access to {box.email}: reconnect your {MAILBOX[kind]} account"
    )
    (request,) = provider.requests
    assert request.status == 400 and request.form["refresh_token"] == box.refresh
    assert (await box.row(session)).revoked is True

    # From now on nothing calls out, and campaigns refuse the credential.
    with pytest.raises(PermanentSendError, match="revoked: reconnect your"):
        await box.tokens().access_token()
    assert len(provider.requests) == 1
    refused = await actor.post("/emails", body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"].startswith(f"{kind}_credential: ")


@KINDS
async def test_revoked_and_deleted_credentials_fail_without_calling_out(
    world: World, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient, kind: Kind
) -> None:
    actor, revoked = await mailbox(world, app, provider, http, kind, expires_in=-10)
    assert (await actor.post(f"/users/self/{kind}-credentials/{revoked.id}/revoke")).status_code == 200
    with pytest.raises(PermanentSendError, match=f"access to {revoked.email} is revoked"):
        await revoked.tokens().access_token()

    deleted = await Mailbox(app, provider, http, kind).create(world, actor, expires_in=3000)
    tokens = deleted.tokens()
    assert await tokens.access_token() == deleted.access
    assert (await actor.delete(f"/users/self/{kind}-credentials/{deleted.id}")).status_code == 204
    with pytest.raises(PermanentSendError, match=f"the {MAILBOX[kind]} account .* was disconnected"):
        await tokens.access_token(refresh=True)
    with pytest.raises(PermanentSendError):
        await Mailbox(app, provider, http, kind).tokens().access_token()  # no such row at all
    assert provider.requests == []


async def test_a_rate_limited_or_failing_token_endpoint_is_a_transient_failure(
    world: World, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, box = await mailbox(world, app, provider, http, "google", expires_in=-10)
    tokens = box.tokens()
    provider.fail_next(1, 429, {"error": "rate_limit_exceeded"}, headers={"Retry-After": "7"})
    with pytest.raises(TransientSendError) as limited:
        await tokens.access_token()
    assert limited.value.retry_after == 7.0
    provider.fail_next(1, 503)
    with pytest.raises(TransientSendError):
        await tokens.access_token()
    row = await box.row(session)
    assert box.decrypt(row.access_token) == box.access and row.revoked is False

    assert await tokens.access_token() != box.access  # the provider is back
    assert provider.refreshes() == 1


async def test_a_refused_client_secret_is_a_permanent_failure_that_leaves_the_credential(
    world: World, app: FastAPI, provider: FakeOAuth, http: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, box = await mailbox(world, app, provider, http, "microsoft", expires_in=-10)
    tokens = box.tokens()
    provider.clients["microsoft"] = ("ms-client-id", "a-rotated-secret")  # the server's secret is now wrong
    with pytest.raises(PermanentSendError, match="invalid_client"):
        await tokens.access_token()
    assert (await box.row(session)).revoked is False
