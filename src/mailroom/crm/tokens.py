"""API tokens: issued, listed, revoked by their owner, and checked on every request; each may carry an expiry.

A token is shown once, when it is made: only its SHA-256 is kept, with a short hint of its first
characters so its owner can tell tokens apart.

Checking a token costs a statement; an API client polling sends the same token hundreds of times a
second. Each process keeps what it learnt of a token for at most ``HOLDER_TTL`` (one second): a token
revoked, expired or whose user was deleted stops working everywhere within that second, and at once
in the process that revoked it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import ApiToken, User
from mailroom.crypto import TOKEN_PREFIX, hash_api_token, new_api_token
from mailroom.errors import NotFound

# Long enough for a token kept in a CI secret; a token that outlives this should be reissued anyway.
MAX_TOKEN_DAYS = 3650
# "mr_" and four random characters: 24 of the token's 256 random bits, enough to tell tokens apart.
HINT_LENGTH = len(TOKEN_PREFIX) + 4
# How long a process trusts what it read of a token; the most a revocation elsewhere waits to count.
HOLDER_TTL = 1.0
# Tokens remembered at once per process: far more than the clients one process serves in a second.
HOLDER_CACHE_SIZE = 10_000
# A token's last use is worth knowing to the minute; writing it on every request is not.
LAST_USED_EVERY = 60.0
# Bearer tokens are 46 characters; anything much longer is not one and is not looked up.
MAX_TOKEN_LENGTH = 200

HOLDER_SQL = """
    SELECT u.id AS user_id, u.email, u.email_confirmed, t.id AS token_id, t.expires_at, t.last_used_at
    FROM api_tokens t JOIN users u ON u.id = t."user"
    WHERE t.token_hash = %(hash)s AND t.revoked_at IS NULL AND u.deleted_at IS NULL
      AND (t.expires_at IS NULL OR t.expires_at > now())
"""
# SKIP LOCKED: concurrent requests with one token never wait for each other over this.
TOUCH_SQL = """
    UPDATE api_tokens SET last_used_at = now()
    WHERE id = (
        SELECT id FROM api_tokens
        WHERE id = %(id)s AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
        FOR UPDATE SKIP LOCKED
    )
"""


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """The user a live token belongs to, as a request needs them, and the token's own expiry."""

    id: uuid.UUID
    email: str
    email_confirmed: bool
    token_id: uuid.UUID
    token_expires_at: datetime | None


class TokenCheck:
    """Who a bearer token belongs to, remembered for at most HOLDER_TTL."""

    def __init__(
        self,
        connect: Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]],
        *,
        ttl: float = HOLDER_TTL,
    ) -> None:
        self._connect = connect
        self._ttl = ttl
        self._holders: dict[bytes, tuple[float, TokenHolder]] = {}

    async def holder(self, token: str) -> TokenHolder | None:
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        key = hash_api_token(token)
        now = time.monotonic()
        cached = self._holders.get(key)
        if cached is not None and cached[0] > now:
            holder = cached[1]
            if holder.token_expires_at is None or holder.token_expires_at > datetime.now(UTC):
                return holder
        found = await self._read(key)
        if found is None:
            self._holders.pop(key, None)
            return None
        holder, last_used_at = found
        if len(self._holders) >= HOLDER_CACHE_SIZE:
            self._holders.clear()  # a burst of distinct tokens: start again rather than track ages
        self._holders[key] = (now + self._ttl, holder)
        if last_used_at is None or (datetime.now(UTC) - last_used_at).total_seconds() >= LAST_USED_EVERY:
            await self._touch(holder.token_id)
        return holder

    async def is_live(self, token: str) -> bool:
        return await self.holder(token) is not None

    def forget(self, token_id: uuid.UUID) -> None:
        """Drop what this process remembers of a token, at once."""
        for key, (_, holder) in list(self._holders.items()):
            if holder.token_id == token_id:
                del self._holders[key]

    async def _read(self, key: bytes) -> tuple[TokenHolder, datetime | None] | None:
        async with self._connect() as conn:
            row = await (await conn.execute(HOLDER_SQL, {"hash": key})).fetchone()
        if row is None:
            return None
        user_id, email, confirmed, token_id, expires_at, last_used_at = row
        return TokenHolder(user_id, email, confirmed, token_id, expires_at), last_used_at

    async def _touch(self, token_id: uuid.UUID) -> None:
        # Conditional in SQL too: of several processes that read a stale last use, one writes.
        async with self._connect() as conn:
            await conn.execute(TOUCH_SQL, {"id": token_id})


async def issue_token(
    session: AsyncSession, *, user: uuid.UUID, name: str | None = None, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token for the user: its row, and the token itself, which is never seen again."""
    if await session.scalar(select(User.id).where(User.id == user, User.deleted_at.is_(None))) is None:
        raise NotFound("no such user", field="user")
    token = new_api_token()
    row = ApiToken(
        user=user, token_hash=hash_api_token(token), name=name, hint=token[:HINT_LENGTH], expires_at=expires_at
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row, token


def no_later_than(wanted: datetime | None, limit: datetime | None) -> datetime | None:
    """The expiry of a token made by a token that expires at ``limit``: a short-lived token must not be
    a way to mint a lasting one."""
    if limit is None:
        return wanted
    return limit if wanted is None else min(wanted, limit)


async def list_tokens(session: AsyncSession, *, user: uuid.UUID) -> Sequence[ApiToken]:
    """The user's tokens, newest first, revoked and expired ones included (they show when they ended)."""
    rows = await session.scalars(
        select(ApiToken).where(ApiToken.user == user).order_by(ApiToken.created_at.desc(), ApiToken.id)
    )
    return rows.all()


async def revoke_token(session: AsyncSession, *, token_id: uuid.UUID, user: uuid.UUID | None) -> ApiToken:
    """Revokes a token of ``user`` (any user's when None, for the command line). Revoking twice keeps
    the first time; another user's token answers as missing, never as forbidden."""
    conditions = [ApiToken.id == token_id]
    if user is not None:
        conditions.append(ApiToken.user == user)
    row: ApiToken | None = await session.scalar(
        update(ApiToken)
        .where(*conditions)
        .values(revoked_at=func.coalesce(ApiToken.revoked_at, func.now()))
        .returning(ApiToken)
    )
    if row is None:
        raise NotFound("no such token" + (" of yours" if user is not None else ""), field="id")
    return row
