"""Who is calling, and which brand they act in.

A bearer token identifies the user. The brand comes from the path, the X-Rechat-Brand header or the
body; whether the caller may act in it is a domain rule (``mailroom.crm.membership``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from mailroom.crm.tokens import TokenCheck, TokenHolder
from mailroom.errors import BadRequest, Unauthorized

BRAND_HEADER = "X-Rechat-Brand"


@dataclass(frozen=True, slots=True)
class Caller:
    user: TokenHolder

    @property
    def token_expires_at(self) -> datetime | None:
        """When the token the request came with stops working (None: when revoked)."""
        return self.user.token_expires_at


def token_check(request: Request) -> TokenCheck:
    check: TokenCheck = request.app.state.token_check
    return check


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def current_caller(request: Request) -> Caller:
    token = bearer_token(request.headers.get("authorization", ""))
    holder = None if token is None else await token_check(request).holder(token)
    if holder is None:
        raise Unauthorized("a valid bearer token is required", field="Authorization")
    return Caller(user=holder)


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def brand_from_request(request: Request, body_brand: uuid.UUID | None) -> uuid.UUID:
    """The active brand from X-Rechat-Brand or the body; both given must agree."""
    header = request.headers.get(BRAND_HEADER)
    header_brand: uuid.UUID | None = None
    # Present but empty is not absent: the client meant to name a brand and named none.
    if header is not None:
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
