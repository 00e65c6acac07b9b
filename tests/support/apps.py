"""An app of its own for a test that needs settings the shared one does not have."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from mailroom.app import create_app, dispose
from mailroom.config import Settings


@asynccontextmanager
async def app_client(
    settings: Settings, *, peer: str = "127.0.0.1", **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an API built from ``settings`` (plus overrides), connecting from ``peer``; the app is
    stopped (dispose) on leaving."""
    app = create_app(settings.model_copy(update=overrides))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(peer, 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://mailroom.test") as client:
            yield client
    finally:
        await dispose(app)
