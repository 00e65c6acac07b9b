"""Every CRM endpoint is documented, and no body, however wrong, gets a 500 or writes anything."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.models import metadata
from tests.support.world import World

CRM_PATHS = {
    "/brands/{brand}/contacts": {"get", "post"},
    "/brands/{brand}/contacts/import": {"post"},
    "/brands/{brand}/lists": {"post"},
    "/brands/{brand}/lists/{list}/members": {"post"},
    "/agents": {"post"},
    "/users/self/google-credentials": {"post"},
    "/users/self/google-credentials/{credential}": {"delete"},
    "/users/self/google-credentials/{credential}/revoke": {"post"},
    "/users/self/microsoft-credentials": {"post"},
    "/users/self/microsoft-credentials/{credential}": {"delete"},
    "/users/self/microsoft-credentials/{credential}/revoke": {"post"},
}


async def test_every_crm_endpoint_is_on_the_openapi_page(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, methods in CRM_PATHS.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
    assert "text/csv" in paths["/brands/{brand}/contacts/import"]["post"]["requestBody"]["content"]


JUNK = [
    b"null",
    b"[]",
    b'"text"',
    b"42",
    b"{",
    b"{}",
    b'{"contacts": [null]}',
    b'{"name": {"$gt": ""}, "members": [{}]}',
    b'{"email": "a@example.com", "scope_summary": [null], "access_token": ["x"]}',
    b"\xff\xfe\x00",
    b"[" * 5000 + b"]" * 5000,
]


@pytest.mark.parametrize("content", JUNK, ids=range(len(JUNK)))
async def test_junk_bodies_get_a_4xx_and_write_nothing(world: World, session: AsyncSession, content: bytes) -> None:
    actor = await world.brand_admin()
    before = await _row_counts(session)
    paths = [
        f"/brands/{actor.brand}/contacts",
        f"/brands/{actor.brand}/contacts/import",
        f"/brands/{actor.brand}/lists",
        f"/brands/{actor.brand}/lists/{uuid.uuid4()}/members",
        "/agents",
        "/users/self/google-credentials",
        "/users/self/microsoft-credentials",
    ]
    for path in paths:
        for content_type in ("application/json", "text/csv"):
            response = await actor.post(path, content=content, headers={"Content-Type": content_type})
            assert 400 <= response.status_code < 500, (path, content_type, response.text)
            assert response.json()["message"], (path, content_type)
    assert await _row_counts(session) == before


async def _row_counts(session: AsyncSession) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in metadata.sorted_tables:
        counts[table.name] = int(await session.scalar(select(func.count()).select_from(table)) or 0)
    return counts
