"""Requests cannot stall the API: bodies are bounded before they are read, anonymous bodies are not read
at all, slow bodies time out, and associations that could hold every recipient are capped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.app import create_app, dispose
from mailroom.config import Settings
from tests.support.world import World

MiB = 1024 * 1024


class Trickle:
    """A request body that counts how much of it the server pulled."""

    def __init__(self, chunks: int, size: int, pause: float = 0.0) -> None:
        self.chunks, self.size, self.pause, self.pulled = chunks, size, pause, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            if self.pause:
                await asyncio.sleep(self.pause)
            self.pulled += self.size
            yield b"[" * self.size


async def test_an_anonymous_body_is_refused_unread(world: World) -> None:
    client = world.client
    declared = await client.post("/emails", content=b"{" * (30 * MiB), headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["message"].startswith("body:")
    body = Trickle(chunks=30, size=MiB)  # 30 MiB, chunked: no Content-Length to go by
    response = await client.post("/emails", content=body, headers={"Authorization": "Bearer mr_forged"})
    assert response.status_code == 401 and response.json()["message"].startswith("Authorization:")
    # Refused before the body was read: at most the first chunk left the client.
    assert body.pulled <= MiB


async def test_an_empty_body_is_no_body_and_the_route_answers(client: httpx.AsyncClient) -> None:
    # Clients send Content-Length: 0 with a bodiless DELETE; it used to be refused as an anonymous body (401).
    response = await client.delete("/health", headers={"Content-Length": "0"})
    assert response.status_code == 405 and response.headers["allow"] == "GET"


async def test_a_body_over_the_limit_is_refused_while_read_and_writes_nothing(
    world: World, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    body = Trickle(chunks=30, size=MiB)
    response = await admin.client.post("/emails", content=body, headers=admin.headers)
    assert response.status_code == 413 and "2097152" in response.json()["message"]
    assert body.pulled <= 3 * MiB
    assert await session.scalar(text("SELECT count(*) FROM email_campaigns")) == 0


async def test_a_body_trickled_slowly_times_out(settings: Settings, world: World) -> None:
    admin = await world.brand_admin()
    app = create_app(settings.model_copy(update={"body_timeout": 0.5}))
    try:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://mailroom.test") as client:
            body = Trickle(chunks=100, size=1, pause=0.1)  # a byte every 100 ms: 10 s in all
            response = await client.post("/emails", content=body, headers=admin.headers)
            assert response.status_code == 408 and response.json()["message"].startswith("body:")
            # Dropped before the client got to the end of its body, however slowly it was served.
            assert body.pulled < 100
    finally:
        await dispose(app)


async def test_the_emails_association_is_capped_and_the_total_stays_known(
    world: World, session: AsyncSession, app: FastAPI
) -> None:
    admin = await world.brand_admin()
    made = admin.data(
        await admin.post(
            "/emails",
            {"subject": "Hi", "html": "<p>x</p>", "to": [{"recipient_type": "Email", "email": "a@example.com"}]},
        )
    )
    await session.execute(
        text("UPDATE email_campaigns SET executed_at = now(), recipients_count = 3000 WHERE id = :c"),
        {"c": made["id"]},
    )
    await session.execute(
        text(
            "INSERT INTO email_campaign_emails (campaign, seq, email_address, send_type) "
            "SELECT :c, n, 'r' || n || '@example.com', 'To' FROM generate_series(1, 3000) n"
        ),
        {"c": made["id"]},
    )
    await session.commit()
    one = admin.data(await admin.get(f"/emails/{made['id']}?associations[]=email_campaign.emails"))
    assert len(one["emails"]) == 250 and one["recipients_count"] == 3000
    assert one["emails"][0]["email_address"] == "r1@example.com"
    listed = await admin.get(f"/brands/{admin.brand}/emails/campaigns?status=any&associations[]=email_campaign.emails")
    assert len(listed.json()["data"][0]["emails"]) == 250
    page = await admin.get(f"/emails/{made['id']}/emails?start=2990&limit=250")
    assert page.json()["info"] == {"count": 10, "total": 3000}
