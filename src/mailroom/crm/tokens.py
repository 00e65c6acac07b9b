"""API tokens: issued, listed and revoked by their owner; each may carry an expiry.

A token is shown once, when it is made: only its SHA-256 is kept, with a short hint of its first
characters so its owner can tell tokens apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import ApiToken, User
from mailroom.crypto import TOKEN_PREFIX, hash_api_token, new_api_token
from mailroom.errors import NotFound

# Long enough for a token kept in a CI secret; a token that outlives this should be reissued anyway.
MAX_TOKEN_DAYS = 3650
# "mr_" and four random characters: 24 of the token's 256 random bits, enough to tell tokens apart.
HINT_LENGTH = len(TOKEN_PREFIX) + 4


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
