"""API tokens: a user lists, creates and revokes their own; expired and revoked tokens stop working."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.app import create_app, dispose
from mailroom.config import Settings
from mailroom.crm.tokens import HOLDER_TTL
from tests.support.world import World


async def works(client: httpx.AsyncClient, token: str) -> bool:
    response = await client.get("/users/self/tokens", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 401), response.text
    if response.status_code == 401:
        assert response.json()["code"] == "Unauthorized"
    return response.status_code == 200


async def stops_working(client: httpx.AsyncClient, token: str, changed: float) -> None:
    """Ask until the token is refused; ``changed`` is time.monotonic() once the change that ends it was committed.

    A process trusts what it read of a token for HOLDER_TTL from the read, and it read the token before
    the change: a request begun more than HOLDER_TTL after the change is refused, however slow the machine.
    """
    while True:
        asked = time.monotonic()
        if not await works(client, token):
            return
        assert asked - changed <= HOLDER_TTL, "accepted by a request made past the cache's lifetime"
        await asyncio.sleep(0.05)


async def token_rows(session: AsyncSession, user: uuid.UUID) -> list[Any]:
    result = await session.execute(
        text('SELECT id, name, expires_at, revoked_at, last_used_at FROM api_tokens WHERE "user" = :u'),
        {"u": user},
    )
    await session.commit()
    return list(result.all())


async def test_a_user_creates_lists_and_revokes_their_tokens(world: World, client: httpx.AsyncClient) -> None:
    ann = await world.brand_admin()
    made = ann.data(await ann.post("/users/self/tokens", {"name": "CRM sync", "expires_in_days": 30}))
    token = made["token"]
    assert token.startswith("mr_") and made["name"] == "CRM sync" and made["revoked_at"] is None
    assert made["hint"] == token[:7]
    expires = datetime.fromtimestamp(made["expires_at"], UTC)
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    assert await works(client, token)

    listing = await ann.get("/users/self/tokens")
    listed = ann.data(listing)
    assert len(listed) == 2 and listed[0]["id"] == made["id"]  # newest first, then the bootstrap token
    assert set(listed[0]) == {"id", "name", "hint", "created_at", "expires_at", "last_used_at", "revoked_at", "type"}
    # Neither token nor its hash is ever answered again.
    for secret in (token, ann.token):
        assert secret not in listing.text
        assert hashlib.sha256(secret.encode()).hexdigest() not in listing.text

    revoked = await ann.delete(f"/users/self/tokens/{made['id']}")
    assert revoked.status_code == 204
    assert not await works(client, token)
    assert await works(client, ann.token)
    after = {t["id"]: t for t in ann.data(await ann.get("/users/self/tokens"))}
    assert after[made["id"]]["revoked_at"] is not None
    # Revoking again is harmless and keeps the first time.
    assert (await ann.delete(f"/users/self/tokens/{made['id']}")).status_code == 204
    again = {t["id"]: t for t in ann.data(await ann.get("/users/self/tokens"))}
    assert again[made["id"]]["revoked_at"] == after[made["id"]]["revoked_at"]


async def test_a_user_can_revoke_the_token_they_call_with(world: World, client: httpx.AsyncClient) -> None:
    ann = await world.brand_admin()
    (own,) = ann.data(await ann.get("/users/self/tokens"))
    assert (await ann.delete(f"/users/self/tokens/{own['id']}")).status_code == 204
    assert not await works(client, ann.token)


async def test_another_users_token_is_neither_listed_nor_revocable(
    world: World, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    bob = await world.member(ann, role="Agent")
    bobs = bob.data(await bob.post("/users/self/tokens", {"name": "bob's"}))
    # Even an Admin of Bob's brand cannot see or revoke Bob's tokens.
    assert bobs["id"] not in {t["id"] for t in ann.data(await ann.get("/users/self/tokens"))}
    response = await ann.delete(f"/users/self/tokens/{bobs['id']}")
    assert response.status_code == 404
    assert response.json()["code"] == "ResourceNotFound" and response.json()["message"].startswith("id:")
    missing = await ann.delete(f"/users/self/tokens/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert await works(client, bobs["token"])
    assert all(row.revoked_at is None for row in await token_rows(session, bob.user))


async def test_an_expired_token_is_refused(world: World, client: httpx.AsyncClient, session: AsyncSession) -> None:
    ann = await world.brand_admin()
    soon = datetime.now(UTC) + timedelta(hours=1)
    made = ann.data(await ann.post("/users/self/tokens", {"expires_at": soon.isoformat()}))
    assert made["expires_at"] == pytest.approx(soon.timestamp(), abs=0.001)
    assert await works(client, made["token"])
    # An hour passes.
    await session.execute(
        text("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = :id"), {"id": made["id"]}
    )
    await session.commit()
    await stops_working(client, made["token"], changed=time.monotonic())
    assert await works(client, ann.token)


async def test_a_token_made_with_a_short_lived_token_expires_with_it(
    world: World, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    day = ann.data(await ann.post("/users/self/tokens", {"name": "one day", "expires_in_days": 1}))
    parent_end = day["expires_at"]
    as_day = {"Authorization": f"Bearer {day['token']}"}
    # Asked for no expiry, for ten years, or for later than its maker: it ends when its maker ends.
    for body in ({"name": "forever"}, {"expires_in_days": 3650}, {"expires_at": parent_end + 3600}):
        child = (await client.post("/users/self/tokens", json=body, headers=as_day)).json()["data"]
        assert child["expires_at"] == pytest.approx(parent_end, abs=0.001), body
    # Sooner than its maker is kept as asked.
    soon = (await client.post("/users/self/tokens", json={"expires_at": parent_end - 60}, headers=as_day)).json()
    assert soon["data"]["expires_at"] == pytest.approx(parent_end - 60, abs=0.001)
    # A token without an expiry still makes tokens without one.
    lasting = ann.data(await ann.post("/users/self/tokens", {"name": "lasting"}))
    assert lasting["expires_at"] is None
    rows = await token_rows(session, ann.user)
    assert sum(1 for row in rows if row.expires_at is None) == 2  # the bootstrap token and "lasting"


async def test_last_use_is_recorded_at_most_once_a_minute(
    world: World, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    made = ann.data(await ann.post("/users/self/tokens", {}))
    assert made["last_used_at"] is None and made["expires_at"] is None and made["name"] is None
    assert await works(client, made["token"])
    (first,) = [r.last_used_at for r in await token_rows(session, ann.user) if str(r.id) == made["id"]]
    assert first is not None
    assert await works(client, made["token"])
    (second,) = [r.last_used_at for r in await token_rows(session, ann.user) if str(r.id) == made["id"]]
    assert second == first
    await session.execute(
        text("UPDATE api_tokens SET last_used_at = last_used_at - interval '2 minutes' WHERE id = :id"),
        {"id": made["id"]},
    )
    await session.commit()
    # Seen once what this process read of the token is older than the backdating: by a request begun
    # HOLDER_TTL after it at the latest.
    backdated = time.monotonic()
    while True:
        asked = time.monotonic()
        assert await works(client, made["token"])
        (third,) = [r.last_used_at for r in await token_rows(session, ann.user) if str(r.id) == made["id"]]
        if third > first - timedelta(minutes=2):
            break
        assert asked - backdated <= HOLDER_TTL, "the backdated last use was not seen past the cache's lifetime"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": -5}, "expires_in_days"),
        ({"expires_in_days": 100_000}, "expires_in_days"),
        ({"expires_in_days": "30"}, "expires_in_days"),
        ({"expires_in_days": 1.5}, "expires_in_days"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "9998-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "soon"}, "expires_at"),
        ({"expires_in_days": 3, "expires_at": "2099-01-01T00:00:00Z"}, "expires_at"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"token": "mr_chosen"}, "token"),
    ],
)
async def test_bad_token_requests_are_refused_and_create_nothing(
    world: World, session: AsyncSession, body: dict[str, Any], field: str
) -> None:
    ann = await world.brand_admin()
    response = await ann.post("/users/self/tokens", body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "BadRequest" and response.json()["message"].startswith(f"{field}:")
    assert len(await token_rows(session, ann.user)) == 1


async def test_token_endpoints_need_a_valid_token(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/users/self/tokens"),
        await client.post("/users/self/tokens", json={}),
        await client.delete(f"/users/self/tokens/{uuid.uuid4()}", headers={"Authorization": "Bearer mr_nope"}),
    ):
        assert response.status_code == 401 and response.json()["code"] == "Unauthorized"


async def test_what_another_process_remembers_of_a_token_lapses_within_a_second(
    world: World, client: httpx.AsyncClient, settings: Settings, session: AsyncSession
) -> None:
    """Two API processes: a token revoked, or whose user is deleted, through one stops working in the
    other within HOLDER_TTL; a role change counts at once in both (roles are never remembered)."""
    other_app = create_app(settings)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=other_app), base_url="http://mailroom.test"
        ) as other:
            ann = await world.brand_admin()
            bob = await world.member(ann, role="Admin")
            made = ann.data(await ann.post("/users/self/tokens", {"name": "sync"}))
            assert await works(other, made["token"])  # the other process now remembers it
            assert (await client.delete(f"/users/self/tokens/{made['id']}", headers=ann.headers)).status_code == 204
            revoked = time.monotonic()
            assert not await works(client, made["token"])  # at once where it was revoked
            await stops_working(other, made["token"], revoked)

            as_bob = {"Authorization": f"Bearer {bob.token}", "X-Rechat-Brand": str(ann.brand)}
            invite = {"email": "x@example.com"}
            path = f"/brands/{ann.brand}/invitations"
            assert (await other.post(path, json=invite, headers=as_bob)).status_code == 200
            await session.execute(text("UPDATE brand_members SET role = 'Agent' WHERE \"user\" = :u"), {"u": bob.user})
            await session.commit()
            assert (await other.post(path, json=invite, headers=as_bob)).status_code == 403

            assert await works(other, bob.token)
            await session.execute(text("UPDATE users SET deleted_at = now() WHERE id = :u"), {"u": bob.user})
            await session.commit()
            deleted = time.monotonic()
            await stops_working(other, bob.token, deleted)
            await stops_working(client, bob.token, deleted)
    finally:
        await dispose(other_app)
