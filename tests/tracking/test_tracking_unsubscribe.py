"""Unsubscribe links: opaque, stable, unforgeable, and kept out of the access log."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.api.access_log import AccessLog
from mailroom.config import Settings
from mailroom.crypto import SecretBox
from mailroom.links import unsubscribe_token, unsubscribe_url
from tests.support.sender import sent_over_smtp
from tests.support.world import Actor, World


def _readable(token: str) -> bytes:
    """What the token's parts say when base64-decoded, as anyone holding the link could try."""
    out = []
    for part in token.split("."):
        with contextlib.suppress(ValueError):
            out.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return b"|".join(out).lower()


async def _state(session: AsyncSession, brand: Any) -> tuple[list[Any], list[Any]]:
    suppressions = (await session.execute(text("SELECT brand, email, reason FROM suppressions"))).all()
    tags = (await session.execute(text("SELECT tags FROM contacts WHERE brand = :b"), {"b": brand})).scalars().all()
    return list(suppressions), list(tags)


async def test_the_link_in_a_sent_email_hides_the_address_stays_the_same_and_unsubscribes(
    world: World, app: FastAPI, settings: Settings, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    await world.contacts(admin, [{"emails": ["Ann.Lee@example.com"], "first_name": "Ann", "tags": ["t"]}])
    made = admin.data(
        await admin.post(
            "/emails/individual",
            {
                "subject": "News",
                "html": "<p>Hello</p>",
                "due_at": datetime.now(UTC).isoformat(),
                "to": [{"recipient_type": "Tag", "tag": "t"}],
            },
        )
    )
    server = await sent_over_smtp(app.state.sessionmaker, settings, made["id"])
    (message,) = server.messages
    url = message.message["List-Unsubscribe"].strip("<>")
    token = url.rsplit("/", 1)[1]
    assert "ann" not in url.lower()
    decoded = _readable(token)
    assert b"ann.lee" not in decoded and b"example.com" not in decoded
    assert str(admin.brand).encode() not in decoded and admin.brand.bytes not in decoded
    # The same recipient row gets the same link every time: nothing to store, nothing to expire. It names
    # the row, so the unsubscribe counts on this campaign.
    row = (await session.execute(text("SELECT id FROM email_campaign_emails WHERE campaign = :c"),
                                 {"c": made["id"]})).scalar_one()  # fmt: skip
    assert url == unsubscribe_url(settings.public_url, app.state.secret_box, admin.brand, "ann.lee@example.com", row)

    assert (await client.get(url.removeprefix(settings.public_url))).status_code == 200
    assert await _state(session, admin.brand) == ([], [["t"]])  # a GET (a mail scanner) changes nothing
    assert (await client.post(url.removeprefix(settings.public_url))).status_code == 200
    assert await _state(session, admin.brand) == (
        [(admin.brand, "ann.lee@example.com", "unsubscribed")],
        [["t", "Unsubscribed"]],
    )


def _old_format(box: SecretBox, brand: str, address: str) -> str:
    payload = f"{brand}:{address}"
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode() + "." + box.sign(payload)


def _flip(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


TAMPERINGS: list[tuple[str, Callable[[SecretBox, Actor, str], str]]] = [
    ("truncated", lambda box, a, t: t[:-4]),
    ("first character changed", lambda box, a, t: _flip(t, 0)),
    ("last character changed", lambda box, a, t: _flip(t, len(t) - 1)),
    ("extended", lambda box, a, t: t + "AAAA"),
    ("readable brand and address with a MAC", lambda box, a, t: _old_format(box, str(a.brand), "ann@example.com")),
    ("sealed for another purpose", lambda box, a, t: box.seal_fixed("invitation", a.brand.bytes + b"ann@example.com")),
    ("made with another secret", lambda box, a, t: unsubscribe_token(SecretBox("x" * 48), a.brand, "ann@example.com")),
    ("only a brand", lambda box, a, t: box.seal_fixed("unsubscribe", a.brand.bytes)),
    ("not base64", lambda box, a, t: "%25%00!!"),
]


@pytest.mark.parametrize("mangle", [m for _, m in TAMPERINGS], ids=[name for name, _ in TAMPERINGS])
async def test_a_forged_or_tampered_link_answers_404_and_changes_nothing(
    world: World, app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, mangle: Any
) -> None:
    admin = await world.brand_admin()
    await world.contacts(admin, [{"emails": ["ann@example.com"], "tags": ["t"]}])
    box: SecretBox = app.state.secret_box
    token = mangle(box, admin, unsubscribe_token(box, admin.brand, "ann@example.com"))
    for method in (client.post, client.get):
        response = await method(f"/unsubscribe/{token}")
        assert response.status_code == 404, response.text
        assert response.json() == {"code": "ResourceNotFound", "message": "token: no such unsubscribe link"}
    assert await _state(session, admin.brand) == ([], [["t"]])


async def test_the_access_log_keeps_public_tokens_out(caplog: pytest.LogCaptureFixture) -> None:
    access = AccessLog()
    paths = {
        "/unsubscribe/SECRET1": "/unsubscribe/<redacted>",
        "/unsubscribe/SECRET2?x=1": "/unsubscribe/<redacted>",
        "/invitations/SECRET3/accept": "/invitations/<redacted>",
        "/users/confirm/SECRET4": "/users/confirm/<redacted>",
        "/t/c/SECRET5": "/t/<redacted>",  # logged when refused (404 below)
        "/base/unsubscribe/SECRET6": "/base/unsubscribe/<redacted>",
        "/brands/b/contacts?tag=x": "/brands/b/contacts?tag=x",
    }
    status = {path: 404 if path.startswith("/t/") else 200 for path in paths}

    def request(method: str, target: str, answered: int) -> None:
        path, _, query = target.partition("?")
        scope = {"method": method, "path": path, "query_string": query.encode(), "client": ("127.0.0.1", 5000)}
        access.request(scope, answered, 0.001)

    with caplog.at_level(logging.INFO, logger="mailroom.access"):
        for path in paths:
            request("POST", path, status[path])
        # Answered tracking hits and webhook calls are counted in the metrics, not logged one line each.
        for quiet in ("/t/o/SECRET7", "/t/c/SECRET8", "/emails/events"):
            request("GET", quiet, 200)
        access.flush()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        f'127.0.0.1:5000 - "POST {redacted} HTTP/1.1" {status[path]} 1.0 ms' for path, redacted in paths.items()
    ]
    assert "SECRET" not in caplog.text and "/emails/events" not in caplog.text


async def test_a_served_apps_access_log_does_not_keep_unsubscribe_tokens(
    app: FastAPI, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await world.brand_admin()
    token = unsubscribe_token(app.state.secret_box, admin.brand, "ann@example.com")
    app.state.access_log.flush()  # earlier tests' requests to the shared app
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        # log_config=None leaves logging to the test; the lifespan belongs to the shared app fixture.
        config = uvicorn.Config(app, fd=sock.fileno(), log_config=None, lifespan="off", access_log=False)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            with caplog.at_level(logging.INFO, logger="mailroom.access"):
                for _ in range(1000):
                    if server.started:
                        break
                    await asyncio.sleep(0.01)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    assert (await http.post(f"/unsubscribe/{token}")).status_code == 200
                    assert (await http.get(f"/unsubscribe/{token}x")).status_code == 404
                app.state.access_log.flush()
        finally:
            server.should_exit = True
            await serving
    # The shared app's log may hold earlier tests' requests too.
    access = [
        r.getMessage() for r in caplog.records if r.name == "mailroom.access" and "/unsubscribe/" in r.getMessage()
    ]
    assert len(access) == 2 and all("/unsubscribe/<redacted>" in line for line in access), access
    assert token not in caplog.text
