"""Mail to one recipient through the ESP lets them unsubscribe from the message itself, and that counts."""

from __future__ import annotations

from email.message import EmailMessage

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from tests.support.campaigns import schedule
from tests.support.events import settle_all
from tests.support.sender import sent_over_smtp
from tests.support.world import World

FOOTER = "To stop receiving these emails, unsubscribe"
ANN = [{"recipient_type": "Email", "email": "ann@example.com"}]


def _parts(message: EmailMessage) -> tuple[str, str]:
    html, plain = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None and plain is not None
    return str(html.get_content()), str(plain.get_content())


async def test_a_template_without_a_link_gets_a_footer_whose_link_counts_on_the_campaign(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    made = await schedule(admin, path="/emails/individual", html="<html><body><p>Hi</p></body></html>", to=ANN,
                          tracking=False)  # fmt: skip
    (sent,) = (await sent_over_smtp(app.state.sessionmaker, settings, made["id"])).messages
    link = sent.message["List-Unsubscribe"].strip("<>")
    html, plain = _parts(sent.message)
    assert html.endswith(f'<a href="{link}">unsubscribe</a>.</p></body></html>') and FOOTER in html
    assert plain.rstrip().endswith(f"{FOOTER}: {link}")
    assert (await client.post(link.removeprefix(settings.public_url))).status_code == 200
    await settle_all(app.state.sessionmaker)
    query = text("SELECT unsubscribed FROM email_campaigns WHERE id = :c")
    assert (await session.execute(query, {"c": made["id"]})).scalar_one() == 1


async def test_a_template_with_its_own_link_gets_no_footer(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    made = await schedule(admin, path="/emails/individual", html='<p><a href="{{ unsubscribe_url }}">Stop</a></p>',
                          text="Stop: {{ unsubscribe_url }}", to=ANN, tracking=False)  # fmt: skip
    (sent,) = (await sent_over_smtp(app.state.sessionmaker, settings, made["id"])).messages
    link = sent.message["List-Unsubscribe"].strip("<>")
    html, plain = _parts(sent.message)
    assert html.strip() == f'<p><a href="{link}">Stop</a></p>' and plain.strip() == f"Stop: {link}"


async def test_one_message_to_several_people_has_neither_footer_nor_link(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    to = [{"recipient_type": "Email", "email": a} for a in ("ann@example.com", "bob@example.com")]
    made = await schedule(admin, html="<p>Hi all {{ unsubscribe_url }}</p>", to=to, tracking=False)
    (sent,) = (await sent_over_smtp(app.state.sessionmaker, settings, made["id"])).messages
    html, _ = _parts(sent.message)
    assert html.strip() == "<p>Hi all </p>" and sent.message["List-Unsubscribe"] is None
