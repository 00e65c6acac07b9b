"""Who is calling, and which brand they act in.

A bearer token identifies the user. The brand comes from the path, the X-Rechat-Brand header or the
body; whether the caller may act in it is a domain rule (``mailroom.crm.membership``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.api.deps import Session
from mailroom.crm.models import ApiToken, User
from mailroom.crypto import hash_api_token
from mailroom.errors import BadRequest, Unauthorized

BRAND_HEADER = "X-Rechat-Brand"


@dataclass(frozen=True)
class Caller:
    user: User


async def token_user(session: AsyncSession, token: str) -> User | None:
    """The live user a live API token belongs to, or None."""
    user: User | None = await session.scalar(
        select(User)
        .join(ApiToken, ApiToken.user == User.id)
        .where(
            ApiToken.token_hash == hash_api_token(token.strip()),
            ApiToken.revoked_at.is_(None),
            User.deleted_at.is_(None),
        )
    )
    return user


async def token_is_valid(session: AsyncSession, token: str) -> bool:
    return await token_user(session, token) is not None


async def current_caller(request: Request, session: Session) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a valid bearer token is required", field="Authorization")
    user = await token_user(session, token)
    if user is None:
        raise Unauthorized("a valid bearer token is required", field="Authorization")
    return Caller(user=user)


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
