"""The workspace's suppression list (read by members, lifted by Admins) and the user's notifications."""

from __future__ import annotations

import re

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.workspace import browser, csrf_of, signed_in
from tests.support.world import Actor, World

LIFT_BUTTONS = re.compile(r'name="address" value="([^"]+)"')
SEEN_FORMS = re.compile(r'action="/app/notifications/([0-9a-f-]+)/seen"')


async def suppress(session: AsyncSession, actor: Actor, *emails: str, detail: str | None = None) -> None:
    for email in emails:
        await session.execute(
            text("INSERT INTO suppressions (brand, email, reason, detail) VALUES (:brand, :email, 'bounced', :detail)"),
            {"brand": actor.brand, "email": email, "detail": detail},
        )
    await session.commit()


async def test_an_admin_mails_a_suppressed_address_again_and_an_agent_only_reads_the_list(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    agent = await world.member(ann, role="Agent")
    await suppress(session, ann, "gone@example.com", "kept@example.com", detail="<b>550 no such user</b>")
    async with browser(app) as web:
        await signed_in(web, app, agent.user)
        page = await web.get(f"/app/brands/{ann.brand}/suppressions")
        assert page.status_code == 200 and "gone@example.com" in page.text and "kept@example.com" in page.text
        assert "&lt;b&gt;550 no such user&lt;/b&gt;" in page.text  # what the provider said, as text
        assert LIFT_BUTTONS.findall(page.text) == []  # an Agent has no button, and a forged post is refused
        refused = await web.post(
            f"/app/brands/{ann.brand}/suppressions/lift", data={"csrf": csrf_of(page), "address": "gone@example.com"}
        )
        assert refused.status_code == 403
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = await web.get(f"/app/brands/{ann.brand}/suppressions", params={"q": "GONE"})
        assert LIFT_BUTTONS.findall(page.text) == ["gone@example.com"]
        assert (
            await web.post(f"/app/brands/{ann.brand}/suppressions/lift", data={"address": "gone@example.com"})
        ).status_code == 403
        lifted = await web.post(
            f"/app/brands/{ann.brand}/suppressions/lift", data={"csrf": csrf_of(page), "address": "gone@example.com"}
        )
        assert lifted.status_code == 303
    remaining = ann.data(await ann.get(f"/brands/{ann.brand}/suppressions"))
    assert [s["email"] for s in remaining] == ["kept@example.com"]


async def test_another_brands_suppressions_answer_404_and_cannot_be_lifted(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    other = await world.brand_admin()
    await suppress(session, other, "theirs@example.com")
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = await web.get(f"/app/brands/{ann.brand}/suppressions")
        assert (await web.get(f"/app/brands/{other.brand}/suppressions")).status_code == 404
        refused = await web.post(
            f"/app/brands/{other.brand}/suppressions/lift",
            data={"csrf": csrf_of(page), "address": "theirs@example.com"},
        )
        assert refused.status_code == 404
    assert [s["email"] for s in other.data(await other.get(f"/brands/{other.brand}/suppressions"))] == [
        "theirs@example.com"
    ]


async def notify(session: AsyncSession, actor: Actor, kind: str, recipient: str, url: str | None = None) -> None:
    await session.execute(
        text('INSERT INTO notifications ("user", brand, type, recipient, url) VALUES (:user, :brand, :kind, :r, :url)'),
        {"user": actor.user, "brand": actor.brand, "kind": kind, "r": recipient, "url": url},
    )
    await session.commit()


async def test_notifications_are_listed_escaped_and_marked_seen_as_the_api_does(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    bob = await world.brand_admin()
    await notify(session, ann, "clicked", "lead@example.com", "https://x.example/?a=<script>")
    await notify(session, bob, "opened", "bobs-lead@example.com")
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = await web.get("/app/notifications")
        assert "lead@example.com" in page.text and "bobs-lead" not in page.text
        assert "&lt;script&gt;" in page.text and "<script>" not in page.text
        (mine,) = SEEN_FORMS.findall(page.text)
        (bobs,) = [n["id"] for n in bob.data(await bob.get("/notifications"))]
        assert (await web.post(f"/app/notifications/{bobs}/seen", data={"csrf": csrf_of(page)})).status_code == 404
        assert (await web.post(f"/app/notifications/{mine}/seen")).status_code == 403
        assert (await web.post(f"/app/notifications/{mine}/seen", data={"csrf": csrf_of(page)})).status_code == 303
        assert SEEN_FORMS.findall((await web.get("/app/notifications")).text) == []
    (seen,) = ann.data(await ann.get("/notifications"))
    assert seen["seen_at"] is not None
    assert [n["seen_at"] for n in bob.data(await bob.get("/notifications"))] == [None]
