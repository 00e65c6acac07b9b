"""View in browser: {{email.url}} of an archived campaign shows that recipient's email again, and nothing else does."""

from __future__ import annotations

import re
import uuid
from email.message import EmailMessage
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.crypto import SecretBox
from mailroom.links import unsubscribe_url
from mailroom.tracking_links import TrackingTokens
from tests.support.campaigns import schedule
from tests.support.keys import TEST_SECRET_KEY
from tests.support.sender import sent_over_smtp
from tests.support.world import Actor, World

HTML = '<p>Hi {{recipient.first_name}}, from {{sender.display_name}}</p><a href="{{email.url}}">View online</a>'


def _html(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def _view_link(html: str) -> str:
    (href,) = re.findall(r'<a href="([^"]*)">View online</a>', html)
    return href


async def _send(world: World, settings: Settings, app: FastAPI, *, archive: bool) -> tuple[Actor, dict[str, str]]:
    """An individual campaign to Ann and Bob; each one's view link as received."""
    admin = await world.brand_admin()
    await world.contacts(
        admin,
        [{"emails": ["ann@example.com"], "first_name": "Ann", "tags": ["t"]},
         {"emails": ["bob@example.com"], "first_name": "Bob", "tags": ["t"]}],
    )  # fmt: skip
    made = await schedule(
        admin, path="/emails/individual", html=HTML, archive=archive, to=[{"recipient_type": "Tag", "tag": "t"}]
    )
    # Tracking off: the view link is then the href itself rather than a tracked redirect to it.
    server = await sent_over_smtp(app.state.sessionmaker, settings, made["id"], tracking=False)
    return admin, {m.rcpt_tos[0]: _view_link(_html(m.message)) for m in server.messages}


def _path(url: str) -> str:
    return url.removeprefix("http://mailroom.test")


async def test_the_view_link_shows_that_recipients_email(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, links = await _send(world, settings, app, archive=True)
    assert all(link.startswith("http://mailroom.test/emails/view/") for link in links.values())
    assert links["ann@example.com"] != links["bob@example.com"]
    for address, name in (("ann@example.com", "Ann"), ("bob@example.com", "Bob")):
        answer = await client.get(_path(links[address]))  # no bearer token: the link is its own authority
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert answer.headers["x-content-type-options"] == "nosniff"
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert answer.text == (f'<p>Hi {name}, from Ann Agent</p><a href="{links[address]}">View online</a>')
    # The campaign deleted: its archive goes with it.
    await session.execute(text("UPDATE email_campaigns SET deleted_at = now()"))
    await session.commit()
    assert (await client.get(_path(links["ann@example.com"]))).status_code == 404


async def test_no_view_link_without_archive_and_forged_links_404(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin, links = await _send(world, settings, app, archive=False)
    assert set(links.values()) == {""}
    row = (
        await session.execute(text("SELECT id FROM email_campaign_emails WHERE email_address = 'ann@example.com'"))
    ).scalar_one()
    tokens = TrackingTokens(SecretBox(TEST_SECRET_KEY))
    # A link made with the service's own key for a row of an unarchived campaign still shows nothing.
    answer = await client.get(f"/emails/view/{tokens.view(row, personal=True)}")
    assert answer.status_code == 404 and "Ann" not in answer.text
    await session.execute(text("UPDATE email_campaigns SET archive = true"))
    await session.commit()
    good = tokens.view(row, personal=True)
    assert (await client.get(f"/emails/view/{good}")).status_code == 200
    forged: list[Any] = [
        good[:-2] + ("AA" if not good.endswith("AA") else "BA"),
        tokens.view(uuid.uuid4(), personal=True),
        tokens.click(row, 0),
        "x" * 44,
        unsubscribe_url("", app.state.secret_box, admin.brand, "ann@example.com").rsplit("/", 1)[1],
    ]
    for bad in forged:
        assert (await client.get(f"/emails/view/{bad}")).status_code == 404, bad
