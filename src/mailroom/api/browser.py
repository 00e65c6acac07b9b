"""Who a browser is signed in as, for the pages a person reaches without an API token.

A provider's consent screen sends the person's browser back to mailroom, carrying no bearer token. The
only proof of who that browser belongs to is a mailroom web session, which the workspace's sign-in
installs as ``app.state.browser_sessions``. Until one is installed no browser is signed in, and pages
that act for a user (finishing a mailbox connection) act for nobody.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession


class BrowserSessions(Protocol):
    async def user_of(self, request: Request, session: AsyncSession) -> uuid.UUID | None:
        """The live user the request's session cookie belongs to, or None."""


class NoSignIn:
    """No web sign-in: no browser is anybody."""

    async def user_of(self, request: Request, session: AsyncSession) -> uuid.UUID | None:
        return None


async def browser_user(request: Request, session: AsyncSession) -> uuid.UUID | None:
    sessions: BrowserSessions = request.app.state.browser_sessions
    return await sessions.user_of(request, session)
