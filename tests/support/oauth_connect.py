"""Connecting a mailbox as a test does it: the consent URL's query, the provider's code, the two ways
back (a browser's GET, an app's POST with the user's token), and what was stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.oauth_server import FakeOAuth
from tests.support.world import Actor

TABLES = {"google": "google_credentials", "microsoft": "microsoft_credentials"}


def consent(url: str) -> dict[str, str]:
    """The consent URL's query, one value per parameter (as the provider reads it)."""
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), query
    return {name: values[0] for name, values in query.items()}


async def auth_url(actor: Actor, kind: str, scopes: Any = ("mail.send",)) -> dict[str, str]:
    response = await actor.get(f"/users/self/{kind}/auth-url", params={"scopes": scopes})
    return consent(actor.data(response)["url"])


async def come_back(client: httpx.AsyncClient, kind: str, **params: str) -> httpx.Response:
    """The browser's return from the consent screen: no API token, only what the provider added."""
    return await client.get(f"/users/self/{kind}/callback", params=params)


async def finish(actor: Actor, kind: str, *, code: str, state: str) -> httpx.Response:
    """The app hands the code and state it received to mailroom with the user's own API token."""
    return await actor.post(f"/users/self/{kind}/callback", {"code": code, "state": state})


def grant_code(provider: FakeOAuth, kind: str, query: dict[str, str], scopes: Sequence[str], email: str) -> str:
    return provider.issue_code(
        kind, scopes=scopes, redirect_uri=query["redirect_uri"], code_challenge=query["code_challenge"], email=email
    )


async def stored(session: AsyncSession, kind: str) -> list[Any]:
    result = await session.execute(text(f"SELECT * FROM {TABLES[kind]} ORDER BY created_at"))
    return list(result.all())


async def pending_states(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM oauth_states"))).scalar_one())
