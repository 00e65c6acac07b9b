"""Own open and click tracking: what arrives at the SMTP server, what a click and a pixel do, what they refuse."""

from __future__ import annotations

import base64
import json
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
from mailroom.tracking_links import LinkRewriter, TrackingTokens
from tests.support.campaigns import mailgun, schedule
from tests.support.keys import TEST_SECRET_KEY
from tests.support.mailgun_server import mailgun_server
from tests.support.render import HOSTILE_TRACKED_HTML
from tests.support.sender import running_worker, sent_over_smtp, wait_until_sent
from tests.support.world import Actor, World

HTML = (
    "<html><body><p>Hi {{recipient.first_name}}</p>"
    '<a href="https://homes.example.com/listing?id=7&amp;ref=mail">See the listing</a>'
    "<A class=btn HREF='http://maps.example.org/place'>Map</A>"
    '<a href="mailto:sam@example.com">Write to me</a>'
    '<a href="tel:+15550100">Call</a>'
    '<a href="#details">Details</a>'
    '<a href="http://mailroom.test/unsubscribe/abc">Unsubscribe</a>'
    '<a href="https://lists.example.net/unsubscribe?u=1">Leave their list</a>'
    "</body></html>"
)
TEXT = "Listing: https://homes.example.com/listing?id=7"
ORIGINAL_LINKS = ["https://homes.example.com/listing?id=7&ref=mail", "http://maps.example.org/place"]
UNTOUCHED = (
    'href="mailto:sam@example.com"',
    'href="tel:+15550100"',
    'href="#details"',
    'href="http://mailroom.test/unsubscribe/abc"',
    'href="https://lists.example.net/unsubscribe?u=1"',
)


def _html(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


_FOOTER = re.compile(
    r'<p style="[^"]*">To stop receiving these emails, unsubscribe: <a href="([^"]+)">unsubscribe</a>\.</p>'
)


def _without_footer(message: EmailMessage) -> str:
    """The html as the template made it: the unsubscribe footer (the message's own link, untracked) taken out."""
    html = _html(message)
    (link,) = _FOOTER.findall(html)
    assert f"<{link}>" == message["List-Unsubscribe"]
    return _FOOTER.sub("", html)


def _tracked(html: str) -> list[str]:
    return re.findall(r"""http://mailroom\.test/t/c/[A-Za-z0-9_-]+""", html)


def _pixel(html: str) -> str:
    (src,) = re.findall(r'<img src="(http://mailroom\.test/t/o/[A-Za-z0-9_-]+)" width="1" height="1" alt=""', html)
    assert html.index(src) < html.lower().index("</body>")
    return src


async def _individual(world: World, admin: Actor | None = None, **fields: Any) -> tuple[Actor, dict[str, Any]]:
    """An individual campaign to Ann and Bob (contacts of the admin's brand, made unless an admin is given)."""
    if admin is None:
        admin = await world.brand_admin()
        await world.contacts(
            admin,
            [{"emails": ["ann@example.com"], "first_name": "Ann", "tags": ["t"]},
             {"emails": ["bob@example.com"], "first_name": "Bob", "tags": ["t"]}],
        )  # fmt: skip
    body = {"html": HTML, "text": TEXT, "to": [{"recipient_type": "Tag", "tag": "t"}], **fields}
    return admin, await schedule(admin, path="/emails/individual", **body)


async def _events(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT type, source, brand, campaign, email, campaign_email, recipient, url, link_index, user_agent, ip "
            "FROM email_events ORDER BY id"
        )
    )
    return [dict(r._mapping) for r in rows]


async def _rows(session: AsyncSession, campaign: str) -> dict[str, Any]:
    """Each recipient's row id, email id and the links kept with the email."""
    rows = await session.execute(
        text(
            "SELECT r.email_address, r.id, r.email, e.links FROM email_campaign_emails r "
            "JOIN emails e ON e.id = r.email WHERE r.campaign = :c"
        ),
        {"c": campaign},
    )
    return {r.email_address: r for r in rows}


def _path(url: str) -> str:
    return url.removeprefix("http://mailroom.test")


def _retoken(token: str, *, email: uuid.UUID | None = None, index: int | None = None) -> str:
    """The token with its email id or link index changed and its signature kept, as a forger would try."""
    raw = bytearray(base64.urlsafe_b64decode(token))
    if email is not None:
        raw[:16] = email.bytes
    if index is not None:
        raw[16:18] = index.to_bytes(2, "big")
    return base64.urlsafe_b64encode(bytes(raw)).decode()


async def test_sent_links_redirect_to_the_original_and_record_clicks_and_opens(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin, made = await _individual(world)
    server = await sent_over_smtp(app.state.sessionmaker, settings, made["id"])
    by_rcpt = {m.rcpt_tos[0]: m.message for m in server.messages}
    rows = await _rows(session, made["id"])
    for address, message in by_rcpt.items():
        html = _html(message)
        assert len(_tracked(html)) == 2
        assert "homes.example.com" not in html and "maps.example.org" not in html
        assert all(kept in html for kept in UNTOUCHED)
        _pixel(html)
        # The plain text part keeps the sender's own links; the footer follows it.
        assert re.split(r"\s+--\s+To stop receiving", _text(message))[0].strip() == TEXT
        assert rows[address].links == ORIGINAL_LINKS

    ann = rows["ann@example.com"]
    ann_html = _html(by_rcpt["ann@example.com"])
    listing, place = _tracked(ann_html)
    answer = await client.get(_path(place), headers={"User-Agent": "Mail/1.0"})
    assert answer.status_code == 302 and answer.headers["location"] == "http://maps.example.org/place"
    answer = await client.get(_path(listing))
    assert answer.status_code == 302 and answer.headers["location"] == ORIGINAL_LINKS[0]
    pixel = await client.get(_path(_pixel(ann_html)), headers={"User-Agent": "Mail/1.0"})
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert len(pixel.content) == 43 and pixel.content.startswith(b"GIF89a")
    assert "no-store" in pixel.headers["cache-control"]

    first, second, opened = await _events(session)
    common = {"brand": admin.brand, "campaign": uuid.UUID(made["id"]), "email": ann.email,
              "campaign_email": ann.id, "recipient": "ann@example.com"}  # fmt: skip
    assert first == {**common, "type": "clicked", "source": "click", "url": "http://maps.example.org/place",
                     "link_index": 1, "user_agent": "Mail/1.0", "ip": "127.0.0.1"}  # fmt: skip
    assert second["type"] == "clicked" and second["link_index"] == 0 and second["url"] == ORIGINAL_LINKS[0]
    assert opened == {**common, "type": "opened", "source": "pixel", "url": None, "link_index": None,
                      "user_agent": "Mail/1.0", "ip": "127.0.0.1"}  # fmt: skip


async def test_a_tampered_or_foreign_token_never_redirects(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, made = await _individual(world)
    server = await sent_over_smtp(app.state.sessionmaker, settings, made["id"])
    rows = await _rows(session, made["id"])
    ann_html = _html(next(m.message for m in server.messages if m.rcpt_tos == ["ann@example.com"]))
    listing = _tracked(ann_html)[0]
    token = listing.rsplit("/", 1)[1]
    tokens = TrackingTokens(SecretBox(TEST_SECRET_KEY))
    forged = [
        _retoken(token, index=1),  # another position of the same email
        _retoken(token, email=rows["bob@example.com"].email),  # another email's id
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # a changed signature
        token + "A",
        "not-a-token",
        tokens.open(rows["ann@example.com"].email),  # an open token is not a click token
        tokens.click(rows["ann@example.com"].email, 2),  # signed, but the email held only two links
        tokens.click(uuid.uuid4(), 0),  # signed, for no email
    ]
    for bad in forged:
        answer = await client.get(f"/t/c/{bad}")
        assert answer.status_code == 404, bad
        assert "location" not in answer.headers and "homes.example.com" not in answer.text
    # A pixel never shows as a broken image, whatever its token; only ours count.
    for bad in ("not-a-token", _retoken(_pixel(ann_html).rsplit("/", 1)[1], email=rows["bob@example.com"].email)):
        pixel = await client.get(f"/t/o/{bad}")
        assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
        assert "no-store" in pixel.headers["cache-control"]
    assert await _events(session) == []


async def test_a_shared_message_names_the_email_but_no_single_recipient(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    made = await schedule(
        admin,
        html='<a href="https://homes.example.com/">Homes</a>',
        to=[{"recipient_type": "Email", "email": "ann@example.com"},
            {"recipient_type": "Email", "email": "bob@example.com"}],
    )  # fmt: skip
    server = await sent_over_smtp(app.state.sessionmaker, settings, made["id"])
    (message,) = server.messages
    (link,) = _tracked(_html(message.message))
    assert (await client.get(_path(link))).headers["location"] == "https://homes.example.com/"
    (event,) = await _events(session)
    email = (await session.execute(text("SELECT DISTINCT email FROM email_campaign_emails"))).scalar_one()
    assert event["email"] == email and event["campaign"] == uuid.UUID(made["id"])
    assert event["campaign_email"] is None and event["recipient"] is None


async def test_tracking_off_sends_the_html_untouched(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin, everywhere = await _individual(world)
    server = await sent_over_smtp(app.state.sessionmaker, settings, everywhere["id"], tracking=False)
    assert {_without_footer(m.message) for m in server.messages} == {HTML.replace("{{recipient.first_name}}", n)
                                                                     for n in ("Ann", "Bob")}  # fmt: skip
    assert {r.links for r in (await _rows(session, everywhere["id"])).values()} == {None}

    # Per campaign: tracking is on in the worker, off in the campaign.
    _, this_one = await _individual(world, admin, tracking=False)
    assert this_one["tracking"] is False
    server = await sent_over_smtp(app.state.sessionmaker, settings, this_one["id"])
    assert len(server.messages) == 2 and all("/t/" not in _html(m.message) for m in server.messages)


async def test_mailgun_sends_ask_mailgun_to_track(world: World, app: FastAPI, settings: Settings) -> None:
    admin, individual = await _individual(world)
    # Html reading no recipient variable: one shared message, sent as MIME.
    shared_html = HTML.replace("{{recipient.first_name}}", "all")
    shared = await schedule(admin, html=shared_html, to=[{"recipient_type": "Email", "email": "cy@example.com"}])
    with mailgun_server() as fake:
        async with running_worker(settings, **mailgun(settings, fake)):
            await wait_until_sent(app.state.sessionmaker, individual["id"])
            await wait_until_sent(app.state.sessionmaker, shared["id"])
    batch = next(r for r in fake.requests if r.endpoint == "messages")
    mime = next(r for r in fake.requests if r.endpoint == "messages.mime")
    for request in (batch, mime):
        assert request.field("o:tracking") == "yes"
        assert request.field("o:tracking-opens") == "yes"
        assert request.field("o:tracking-clicks") == "htmlonly"
    # Mailgun rewrites the links itself: what it receives is the html as written.
    htmls = [v["html"] for v in json.loads(batch.field("recipient-variables")).values()]
    assert len(htmls) == 2 and all("/t/" not in h and "https://homes.example.com/listing" in h for h in htmls)
    assert mime.mime is not None and "/t/" not in _html(mime.mime)

    _, untracked = await _individual(world, admin)
    with mailgun_server() as fake:
        async with running_worker(settings, tracking=False, **mailgun(settings, fake)):
            await wait_until_sent(app.state.sessionmaker, untracked["id"])
    (request,) = fake.requests
    assert not any(name.startswith("o:tracking") for name in request.fields)


def test_rewriting_gets_through_hostile_html() -> None:
    # Each input once took a rescan or a backtracking pattern quadratic: hours at 2 MB, which the
    # per-test timeout fails. How long each takes is printed by bench/render.py.
    rewriter = LinkRewriter(TrackingTokens(SecretBox(TEST_SECRET_KEY)), "http://mailroom.test")
    for name, html in HOSTILE_TRACKED_HTML.items():
        tracked = rewriter.rewrite(html, uuid.uuid4())
        if name == "links":
            count = html.count("<a ")
            assert tracked.links == ["https://x.example.com/p"] * count
            assert tracked.html.count('<a href="http://mailroom.test/t/c/') == count, name
            assert "x.example.com" not in tracked.html
        else:
            # No link in it (an unclosed tag ends the document): the html as it was, the pixel at the end.
            assert tracked.links == [], name
            assert tracked.html.startswith(html), name
            assert tracked.html[len(html) :].startswith('<img src="http://mailroom.test/t/o/'), name
