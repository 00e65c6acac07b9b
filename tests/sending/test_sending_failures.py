"""A campaign that cannot go out fails as a whole with a reason a user can read; nothing is sent."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from tests.support.campaigns import received, schedule
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import FakeSmtpServer, smtp_server
from tests.support.world import Actor, World


async def send_with_stored_html(
    world: World, app: FastAPI, settings: Settings, html: str
) -> tuple[dict[str, Any], FakeSmtpServer, Actor, str]:
    """A campaign whose stored html was changed behind the API's back (the API checks it on the way in)."""
    admin = await world.brand_admin()
    made = await schedule(admin, to=[{"recipient_type": "Email", "email": "a@example.com"}], due_at=None)
    async with app.state.sessionmaker() as s, s.begin():
        await s.execute(
            text("UPDATE email_campaigns SET html = :html, due_at = now(), updated_at = now() WHERE id = :id"),
            {"id": made["id"], "html": html},
        )
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    return state, server, admin, made["id"]


async def test_template_that_does_not_compile_fails_the_campaign_naming_the_line(
    world: World, app: FastAPI, settings: Settings
) -> None:
    state, server, admin, campaign = await send_with_stored_html(
        world, app, settings, "<p>ok</p>\n<p>{{ recipient.first_name </p>"
    )
    assert server.messages == []
    assert state["failed_at"] is not None and "line 2" in state["failure"] and "html" in state["failure"]
    rows = admin.data(await admin.get(f"/emails/{campaign}/emails"))
    assert [r["error"] for r in rows] == [state["failure"]]


ESCAPE = "{{ sender.__class__.__mro__[1].__subclasses__() }}{{ cycler.__init__.__globals__ }}"


async def test_template_reaching_for_python_internals_sends_nothing_dangerous(
    world: World, app: FastAPI, settings: Settings
) -> None:
    state, server, _, _ = await send_with_stored_html(world, app, settings, ESCAPE)
    assert server.messages == []
    assert state["failed_at"] is not None and "unsafe" in state["failure"]
    assert "<class" not in state["failure"]


async def test_quota_exceeded_fails_the_campaign_before_anything_is_sent(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    async with app.state.sessionmaker() as s, s.begin():
        await s.execute(text("UPDATE users SET email_quota = 2 WHERE id = :id"), {"id": admin.user})
    await world.contacts(admin, [{"emails": [f"p{i}@example.com"], "tags": ["t"]} for i in range(3)])
    made = await schedule(admin, path="/emails/individual", to=[{"recipient_type": "Tag", "tag": "t"}])
    small = await schedule(admin, path="/emails/individual", to=[{"recipient_type": "Email", "email": "x@example.com"}])
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
            small_state = await wait_until_sent(app.state.sessionmaker, small["id"])
    assert state["failure"] == "Maximum marketing email quota per month exceeded."
    assert state["sent"] == 0 and small_state["sent"] == 1 and small_state["failed_at"] is None
    assert received(server) == ["x@example.com"]
    quota = admin.data(await admin.get(f"/brands/{admin.brand}/emails/quota"))
    assert quota["executed"] == 1


async def test_a_refused_address_fails_alone(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    made = await schedule(
        admin,
        path="/emails/individual",
        to=[
            {"recipient_type": "Email", "email": "ok@example.com"},
            {"recipient_type": "Email", "email": "no@example.com"},
        ],
    )
    with smtp_server() as server:
        server.refuse("no@example.com", "550 5.1.1 No such user")
        async with running_worker(settings, transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert received(server) == ["ok@example.com"]
    assert state["failed_at"] is None and state["sent"] == 1 and state["failed"] == 1
    rows = {r["email_address"]: r for r in admin.data(await admin.get(f"/emails/{made['id']}/emails"))}
    assert "550" in rows["no@example.com"]["error"] and rows["no@example.com"]["failed"] == 1
    assert rows["ok@example.com"]["error"] is None
