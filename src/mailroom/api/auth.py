"""Who is calling, and which brand they act in.

A bearer token identifies the user. The brand comes from the path, the X-Rechat-Brand header or the
body; whether the caller may act in it is a domain rule (``mailroom.crm.membership``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.api.deps import Session
from mailroom.crm.models import ApiToken, User
from mailroom.crypto import hash_api_token
from mailroom.errors import BadRequest, Unauthorized

BRAND_HEADER = "X-Rechat-Brand"


# When a token was last used is worth knowing to the minute; writing it on every request is not.
LAST_USED_EVERY = timedelta(minutes=1)
# SKIP LOCKED: concurrent requests with one token never wait for each other's transaction over this.
TOUCH_TOKEN_SQL = text(
    """
    UPDATE api_tokens SET last_used_at = now()
    WHERE id = (
        SELECT id FROM api_tokens
        WHERE id = :id AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
        FOR UPDATE SKIP LOCKED
    )
    """
)


@dataclass(frozen=True)
class Caller:
    user: User
    # When the token the request came with stops working (None: when revoked).
    token_expires_at: datetime | None = None


async def _token_row(
    session: AsyncSession, token: str
) -> tuple[User, uuid.UUID, datetime | None, datetime | None] | None:
    """The live user a live, unexpired API token belongs to, with the token's id, last use and expiry."""
    found = (
        await session.execute(
            select(User, ApiToken.id, ApiToken.last_used_at, ApiToken.expires_at)
            .join(ApiToken, ApiToken.user == User.id)
            .where(
                ApiToken.token_hash == hash_api_token(token.strip()),
                ApiToken.revoked_at.is_(None),
                or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > func.now()),
                User.deleted_at.is_(None),
            )
        )
    ).one_or_none()
    return None if found is None else (found[0], found[1], found[2], found[3])


async def token_is_valid(session: AsyncSession, token: str) -> bool:
    return await _token_row(session, token) is not None


async def current_caller(request: Request, session: Session) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a valid bearer token is required", field="Authorization")
    found = await _token_row(session, token)
    if found is None:
        raise Unauthorized("a valid bearer token is required", field="Authorization")
    user, token_id, last_used_at, expires_at = found
    if last_used_at is None or last_used_at < datetime.now(UTC) - LAST_USED_EVERY:
        await session.execute(TOUCH_TOKEN_SQL, {"id": token_id})
    return Caller(user=user, token_expires_at=expires_at)


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def brand_from_request(request: Request, body_brand: uuid.UUID | None) -> uuid.UUID:
    """The active brand from X-Rechat-Brand or the body; both given must agree."""
    header = request.headers.get(BRAND_HEADER)
    header_brand: uuid.UUID | None = None
    if header:
        try:
            header_brand = uuid.UUID(header)
        except ValueError:
            raise BadRequest("must be a brand id", field=BRAND_HEADER) from None
    if header_brand and body_brand and header_brand != body_brand:
        raise BadRequest(f"does not match the {BRAND_HEADER} header", field="brand")
    brand = header_brand or body_brand
    if brand is None:
        raise BadRequest(f"is required (in the body or the {BRAND_HEADER} header)", field="brand")
    return brand
