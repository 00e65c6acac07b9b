"""The one-click unsubscribe is an event too, counted with the webhooks' unsubscribes."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.links import unsubscribe_url
from tests.support.world import World


async def test_unsubscribing_appends_an_unsubscribed_event(
    world: World, app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    url = unsubscribe_url("", app.state.secret_box, admin.brand, "Ann.Lee@Example.com")
    assert (await client.get(url)).status_code == 200
    assert (await session.execute(text("SELECT count(*) FROM email_events"))).scalar_one() == 0  # a GET is no click
    assert (await client.post(url)).status_code == 200
    events = (
        await session.execute(text("SELECT type, source, brand, recipient, campaign, email FROM email_events"))
    ).all()
    assert [tuple(e) for e in events] == [("unsubscribed", "unsubscribe", admin.brand, "ann.lee@example.com", None,
                                           None)]  # fmt: skip
