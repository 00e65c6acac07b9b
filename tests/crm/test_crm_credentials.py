"""POST/DELETE /users/self/{google,microsoft}-credentials and .../revoke."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import GoogleCredential, MicrosoftCredential
from tests.support.world import World

MODELS: dict[str, type[GoogleCredential] | type[MicrosoftCredential]] = {
    "google": GoogleCredential,
    "microsoft": MicrosoftCredential,
}
KINDS = pytest.mark.parametrize("kind", ["google", "microsoft"])


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "email": "Ann@Example.com",
        "scope_summary": ["profile", "mail.send", "mail.modify"],
        "access_token": "ya29.access-SECRET-1234",
        "refresh_token": "1//refresh-SECRET-5678",
        "expires_at": "2030-01-02T03:04:05Z",
        **overrides,
    }


async def row_of(session: AsyncSession, kind: str, credential_id: str) -> Any:
    model = MODELS[kind]
    result = await session.execute(select(model.__table__).where(model.id == uuid.UUID(credential_id)))
    return result.one()


async def count(session: AsyncSession, kind: str) -> int:
    return int(await session.scalar(select(func.count()).select_from(MODELS[kind])) or 0)


@KINDS
async def test_a_credential_is_answered_without_its_tokens_which_are_stored_encrypted(
    world: World, session: AsyncSession, app: FastAPI, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    actor = await world.brand_admin()
    response = await actor.post(f"/users/self/{kind}-credentials", body())
    credential = actor.data(response)

    assert credential["type"] == f"{kind}_credential"
    assert credential["user"] == str(actor.user) and credential["brand"] == str(actor.brand)
    assert credential["email"] == "Ann@Example.com"
    assert credential["scope_summary"] == ["profile", "mail.send", "mail.modify"]
    assert credential["revoked"] is False and credential["deleted_at"] is None
    assert credential["expires_at"] == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert isinstance(credential["created_at"], float)
    assert "access_token" not in credential and "refresh_token" not in credential
    assert "SECRET" not in response.text

    row = await row_of(session, kind, credential["id"])
    assert (row.user, row.brand, row.revoked) == (actor.user, actor.brand, False)
    assert b"SECRET" not in bytes(row.access_token) and b"SECRET" not in bytes(row.refresh_token)
    box = app.state.secret_box
    assert box.decrypt(bytes(row.access_token)) == "ya29.access-SECRET-1234"
    assert box.decrypt(bytes(row.refresh_token)) == "1//refresh-SECRET-5678"
    assert "SECRET" not in caplog.text


@KINDS
async def test_optional_fields_and_epoch_expiry(world: World, session: AsyncSession, kind: str) -> None:
    actor = await world.brand_admin()
    fields = body(refresh_token=None, expires_at=1_900_000_000, scope_summary=["mail.send", "mail.send"])
    credential = actor.data(await actor.post(f"/users/self/{kind}-credentials", fields))
    assert credential["expires_at"] == 1_900_000_000.0
    assert credential["scope_summary"] == ["mail.send"]
    row = await row_of(session, kind, credential["id"])
    assert row.refresh_token is None


BAD = [
    pytest.param(body(scope_summary=["mail.send", "mail.everything"]), "scope_summary.1: ", id="unknown-scope"),
    pytest.param(body(scope_summary=[]), "scope_summary: ", id="no-scopes"),
    pytest.param(body(scope_summary="mail.send"), "scope_summary", id="scopes-not-list"),
    pytest.param(body(email="nope"), "email: ", id="bad-email"),
    pytest.param(body(access_token=""), "access_token: ", id="empty-token"),
    pytest.param(body(access_token=123), "access_token: ", id="token-number"),
    pytest.param({k: v for k, v in body().items() if k != "access_token"}, "access_token: ", id="no-token"),
    pytest.param(body(expires_at="next week"), "expires_at: ", id="bad-expiry"),
    pytest.param(body(expires_at="0001-01-01T00:00:00+01:00"), "expires_at: ", id="expiry-out-of-range"),
    pytest.param(body(revoked=True), "revoked: ", id="unknown-field"),
]


@KINDS
@pytest.mark.parametrize(("fields", "message"), BAD)
async def test_bad_credentials_are_refused_naming_the_field(
    world: World, session: AsyncSession, kind: str, fields: dict[str, Any], message: str
) -> None:
    actor = await world.brand_admin()
    response = await actor.post(f"/users/self/{kind}-credentials", fields)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(message)
    assert "SECRET" not in response.text
    assert await count(session, kind) == 0


@KINDS
async def test_the_brand_comes_from_the_header_and_the_caller_must_be_a_member(
    world: World, session: AsyncSession, kind: str
) -> None:
    actor = await world.brand_admin()
    other = await world.brand_admin()
    path = f"/users/self/{kind}-credentials"

    missing = await actor.client.post(path, json=body(), headers={"Authorization": f"Bearer {actor.token}"})
    assert missing.status_code == 400 and "X-Rechat-Brand" in missing.json()["message"]
    garbled = await actor.post(path, body(), headers={"X-Rechat-Brand": "brand-one"})
    assert garbled.status_code == 400 and garbled.json()["message"].startswith("X-Rechat-Brand: ")
    foreign = await actor.post(path, body(), headers={"X-Rechat-Brand": str(other.brand)})
    assert foreign.status_code == 403 and foreign.json()["message"].startswith("X-Rechat-Brand: ")
    assert await count(session, kind) == 0


@KINDS
async def test_revoke_marks_it_and_delete_hides_it(world: World, session: AsyncSession, kind: str) -> None:
    actor = await world.brand_admin()
    path = f"/users/self/{kind}-credentials"
    credential = actor.data(await actor.post(path, body()))

    revoked = actor.data(await actor.post(f"{path}/{credential['id']}/revoke"))
    assert revoked["revoked"] is True and revoked["id"] == credential["id"]
    assert actor.data(await actor.post(f"{path}/{credential['id']}/revoke"))["revoked"] is True
    assert (await row_of(session, kind, credential["id"])).revoked is True

    deleted = await actor.delete(f"{path}/{credential['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await row_of(session, kind, credential["id"])).deleted_at is not None

    assert (await actor.delete(f"{path}/{credential['id']}")).status_code == 404
    assert (await actor.post(f"{path}/{credential['id']}/revoke")).status_code == 404


@KINDS
async def test_nobody_else_can_revoke_or_delete_a_credential(world: World, session: AsyncSession, kind: str) -> None:
    owner = await world.brand_admin()
    colleague = await world.member(owner, role="Admin")
    path = f"/users/self/{kind}-credentials"
    credential = owner.data(await owner.post(path, body()))

    for actor in (colleague, await world.brand_admin()):
        revoke = await actor.post(f"{path}/{credential['id']}/revoke")
        assert revoke.status_code == 404 and "Ann@Example.com" not in revoke.text
        assert (await actor.delete(f"{path}/{credential['id']}")).status_code == 404
    assert (await owner.delete(f"{path}/{uuid.uuid4()}")).status_code == 404
    assert (await owner.delete(f"{path}/not-an-id")).status_code == 400

    row = await row_of(session, kind, credential["id"])
    assert row.revoked is False and row.deleted_at is None


async def test_world_helpers_make_live_revoked_and_deleted_credentials(world: World, session: AsyncSession) -> None:
    actor = await world.brand_admin()
    live = await row_of(session, "google", await world.google_credential(actor))
    assert "mail.send" in live.scope_summary and live.revoked is False and live.deleted_at is None
    revoked = await row_of(
        session, "microsoft", await world.microsoft_credential(actor, revoked=True, scopes=["mail.send"])
    )
    assert revoked.revoked is True and revoked.scope_summary == ["mail.send"]
    deleted = await row_of(session, "google", await world.google_credential(actor, deleted=True))
    assert deleted.deleted_at is not None
