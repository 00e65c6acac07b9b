"""Request bodies of the CRM endpoints, and the wire shape of brands and users."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mailroom.addresses import Address
from mailroom.crm.models import Brand, User
from mailroom.serialize import epoch


class Strict(BaseModel):
    """Unknown fields are refused: a typo in a field name must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BrandIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    parent: uuid.UUID | None = None


class UserIn(Strict):
    email: Address
    role: Literal["Admin", "Agent"] = "Agent"
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    display_name: str | None = Field(default=None, max_length=200)
    phone_number: str | None = Field(default=None, max_length=50)
    profile_image_url: str | None = Field(default=None, max_length=2000)
    email_signature: str | None = Field(default=None, max_length=20000)


def brand_out(brand: Brand) -> dict[str, Any]:
    return {
        "id": brand.id,
        "name": brand.name,
        "parent": brand.parent,
        "created_at": epoch(brand.created_at),
        "updated_at": epoch(brand.updated_at),
        "deleted_at": epoch(brand.deleted_at),
        "type": "brand",
    }


def user_out(user: User, *, role: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": user.id,
        "email": user.email,
        "email_confirmed": user.email_confirmed,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "display_name": user.display_name,
        "phone_number": user.phone_number,
        "profile_image_url": user.profile_image_url,
        "email_signature": user.email_signature,
        "email_quota": user.email_quota,
        "created_at": epoch(user.created_at),
        "updated_at": epoch(user.updated_at),
        "type": "user",
    }
    if role is not None:
        out["role"] = role
    return out
