"""The unsubscribe page a person sees, its undo, and the unsubscribe counted on the campaign it came from."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.links import unsubscribe_url
from tests.support.events import sent_campaign, settle_all
from tests.support.world import World

UNDO = re.compile(r"<form method=post action='([^']+)'><input type=hidden name=undo value='([^']+)'>")


async def _suppressed(session: AsyncSession, brand: uuid.UUID) -> list[tuple[str, str]]:
    rows = await session.execute(text("SELECT email, reason FROM suppressions WHERE brand = :b"), {"b": brand})
    return [tuple(r) for r in rows.all()]


async def _tags(session: AsyncSession, contact: dict[str, Any]) -> list[str]:
    return list(
        (await session.execute(text("SELECT tags FROM contacts WHERE id = :id"), {"id": contact["id"]})).scalar_one()
    )


async def test_the_button_answers_in_words_and_the_same_visit_can_undo_it(
    world: World, app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await world.brand_admin(brand_name="Lee & <Co> Realty")
    contact = await world.contact(admin, "ann@example.com", tags=["buyers"])
    url = unsubscribe_url("", app.state.secret_box, admin.brand, "Ann@Example.com")
    page = (await client.get(url)).text
    assert "Stop receiving mail from Lee &amp; &lt;Co&gt; Realty?" in page and "<Co>" not in page

    answer = await client.post(url, data={"page": "1"})
    assert (
        answer.status_code == 200 and "You will no longer receive mail from Lee &amp; &lt;Co&gt; Realty." in answer.text
    )
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert await _suppressed(session, admin.brand) == [("ann@example.com", "unsubscribed")]
    assert await _tags(session, contact) == ["buyers", "Unsubscribed"]

    action, undo = UNDO.search(answer.text).groups()  # type: ignore[union-attr]
    undo_url = f"{url.rsplit('/', 1)[0]}/{action}"
    undone = await client.post(undo_url, data={"undo": undo})
    assert undone.status_code == 200 and "You are subscribed again" in undone.text
    assert await _suppressed(session, admin.brand) == [] and await _tags(session, contact) == ["buyers"]
    # Settling the unsubscribe's event afterwards does not put the suppression back.
    await settle_all(app.state.sessionmaker)
    assert await _suppressed(session, admin.brand) == []
    # The same undo again lifts nothing more.
    assert "Still unsubscribed" in (await client.post(undo_url, data={"undo": undo})).text


async def test_one_click_still_answers_an_empty_200(world: World, app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await world.brand_admin()
    url = unsubscribe_url("", app.state.secret_box, admin.brand, "ann@example.com")
    answer = await client.post(url, content=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert answer.status_code == 200 and answer.content == b""


async def test_an_undo_lifts_only_its_own_unsubscribe(
    world: World, app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    box = app.state.secret_box
    ann = unsubscribe_url("", box, admin.brand, "ann@example.com")
    bob = unsubscribe_url("", box, admin.brand, "bob@example.com")
    action, undo = UNDO.search((await client.post(ann, data={"page": "1"})).text).groups()  # type: ignore[union-attr]
    # Another link's page cannot take this undo, nor can a forged or missing one.
    for target, token in ((f"{bob}/undo", undo), (f"{ann}/undo", undo[:-2] + "AA"), (f"{ann}/undo", "")):
        refused = await client.post(target, data={"undo": token})
        assert refused.status_code == 404 and refused.json()["message"].startswith("undo: ")
    # An address suppressed before (a bounce) offers no undo, and a sealed undo for it lifts nothing.
    async with app.state.sessionmaker() as s, s.begin():
        bounced = "INSERT INTO suppressions (brand, email, reason) VALUES (:b, 'bob@example.com', 'bounced')"
        await s.execute(text(bounced), {"b": admin.brand})
    page = (await client.post(bob, data={"page": "1"})).text
    assert "You receive no mail" in page and UNDO.search(page) is None
    at = (
        await session.execute(text("SELECT created_at FROM suppressions WHERE email = 'bob@example.com'"))
    ).scalar_one()
    link_key = hashlib.sha256(bob.rsplit("/", 1)[1].encode()).hexdigest()[:32]
    payload = {"link": link_key, "at": at.isoformat(), "tagged": []}
    forged_in_test = box.seal("unsubscribe-undo", payload, ttl=60)
    assert "Still unsubscribed" in (await client.post(f"{bob}/undo", data={"undo": forged_in_test})).text
    assert ("bob@example.com", "bounced") in await _suppressed(session, admin.brand)
    assert action == f"{ann.rsplit('/', 1)[1]}/undo"


async def test_a_link_naming_its_recipient_counts_the_unsubscribe_once_on_its_campaign(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    sent = await sent_campaign(admin, app, settings, ["ann@example.com", "bob@example.com"])
    row = (
        await session.execute(
            text("SELECT id FROM email_campaign_emails WHERE campaign = :c AND email_address = 'ann@example.com'"),
            {"c": sent.id},
        )
    ).scalar_one()
    url = unsubscribe_url("", app.state.secret_box, admin.brand, "ann@example.com", row)
    for _ in range(2):
        assert (await client.post(url)).status_code == 200
    await settle_all(app.state.sessionmaker)
    counted = (
        await session.execute(text("SELECT unsubscribed FROM email_campaigns WHERE id = :c"), {"c": sent.id})
    ).scalar_one()
    rows = "SELECT email_address, unsubscribed FROM email_campaign_emails WHERE campaign = :c"
    per_row: dict[str, int] = dict((await session.execute(text(rows), {"c": sent.id})).all())
    assert counted == 1 and per_row == {"ann@example.com": 1, "bob@example.com": 0}
    stats = admin.data(await admin.get(f"/emails/{sent.id}/stats"))
    assert stats["counts"]["unsubscribed"] == {"unique": 1, "total": 2}
    # A row of another brand's campaign named in a link of this brand counts nowhere.
    other = await world.brand_admin()
    forged = unsubscribe_url("", app.state.secret_box, other.brand, "ann@example.com", row)
    assert (await client.post(forged)).status_code == 200
    await settle_all(app.state.sessionmaker)
    counted = (
        await session.execute(text("SELECT unsubscribed FROM email_campaigns WHERE id = :c"), {"c": sent.id})
    ).scalar_one()
    assert counted == 1
