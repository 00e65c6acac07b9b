"""A browser of the workspace in tests: its own cookie jar, the CSRF token its forms carry, a sign-in."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from mailroom.crm.notices import sign_in_url
from mailroom.web.sign_in import new_link
from tests.support.world import Actor

BASE = "http://mailroom.test"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# A sign-in link as a message or the command line carries it: its path on the service.
SIGN_IN_LINK = re.compile(r"https?://[^/\s]+(/app/sign-in/[A-Za-z0-9_-]+)")


@asynccontextmanager
async def browser(app: FastAPI, base_url: str = BASE) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies as a browser does, apart from the API client's."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


# The compose form filled in as a person would, saved as a draft.
COMPOSE_FORM = {
    "subject": "Open house on {{ recipient.first_name }}'s street",
    "html": "<p>Hello {{ recipient.first_name }}</p>",
    "text": "",
    "addresses": "jane@example.com, joe@example.com",
    "schedule": "draft",
    "tracking_shown": "1",
    "tracking": "1",
}


def new_page(actor: Actor) -> str:
    """The compose page of a new campaign in the actor's brand."""
    return f"/app/brands/{actor.brand}/campaigns/new"


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def link_path(text: str) -> str:
    found = SIGN_IN_LINK.search(text)
    assert found is not None, text
    return found.group(1)


async def printed_link(app: FastAPI, user: uuid.UUID) -> str:
    """The path of a fresh sign-in link for the user, made as `mailroom login-link` makes one."""
    async with app.state.sessionmaker() as session, session.begin():
        link = await new_link(session, user)
    return link_path(sign_in_url(app.state.secret_box, BASE, link))


async def follow_link(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """Open a sign-in link and press its button, as a person does; the answer to the press."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return await client.post(path, data={"csrf": csrf_of(page)})


async def signed_in(client: httpx.AsyncClient, app: FastAPI, user: uuid.UUID) -> None:
    confirmed = await follow_link(client, await printed_link(app, user))
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/app/", confirmed.text
