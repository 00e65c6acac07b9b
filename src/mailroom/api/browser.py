"""Who a browser is signed in as, for the pages a person reaches without an API token.

A provider's consent screen sends the person's browser back to mailroom, carrying no bearer token. The
only proof of who that browser belongs to is a mailroom web session: the workspace's sign-in
(``mailroom.web``) installs its sessions as ``app.state.browser_sessions``. A browser without a live
session is nobody, and pages that act for a user (finishing a mailbox connection) act for nobody.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession


class BrowserSessions(Protocol):
    async def user_of(self, request: Request, session: AsyncSession) -> uuid.UUID | None:
        """The live user the request's session cookie belongs to, or None."""


async def browser_user(request: Request, session: AsyncSession) -> uuid.UUID | None:
    sessions: BrowserSessions = request.app.state.browser_sessions
    return await sessions.user_of(request, session)
