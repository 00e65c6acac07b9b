"""Fixtures of the mailbox-connection tests: the providers' stand-in and an app configured for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from mailroom.app import create_app, dispose
from mailroom.config import Settings
from tests.support.oauth_server import FakeOAuth, oauth_server
from tests.support.world import World


@pytest.fixture
def provider() -> Iterator[FakeOAuth]:
    with oauth_server() as fake:
        yield fake


@pytest.fixture
async def oauth_app(settings: Settings, provider: FakeOAuth) -> AsyncIterator[FastAPI]:
    application = create_app(provider.settings(settings))
    yield application
    await dispose(application)


@pytest.fixture
async def mailroom(oauth_app: FastAPI) -> AsyncIterator[World]:
    transport = httpx.ASGITransport(app=oauth_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mailroom.test") as client:
        yield World(client=client, sessionmaker=oauth_app.state.sessionmaker)
