"""CRM endpoints: brands and their users. Contacts, lists, agents and credentials live beside."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from mailroom.api.auth import CurrentCaller, require_admin
from mailroom.api.deps import Session
from mailroom.api.envelope import ORJSONResponse, ok
from mailroom.crm import service
from mailroom.crm.schemas import BrandIn, UserIn, brand_out, user_out

router = APIRouter(tags=["crm"])


@router.post("/brands", summary="Create a brand (a child brand with `parent`); the caller becomes its Admin")
async def create_brand(body: BrandIn, caller: CurrentCaller, session: Session) -> ORJSONResponse:
    if body.parent is not None:
        await require_admin(session, caller.user.id, body.parent)
    brand = await service.create_brand(session, name=body.name, parent=body.parent)
    await service.set_membership(session, brand=brand.id, user=caller.user.id, role="Admin")
    return ok(brand_out(brand))


@router.post("/brands/{brand}/users", summary="Create a user, or add an existing one, with a role in the brand")
async def add_user(brand: uuid.UUID, body: UserIn, caller: CurrentCaller, session: Session) -> ORJSONResponse:
    await require_admin(session, caller.user.id, brand)
    profile = body.model_dump(exclude={"email", "role", "first_name", "last_name"}, exclude_none=True)
    user = await service.ensure_user(
        session, email=body.email, first_name=body.first_name, last_name=body.last_name, **profile
    )
    await service.set_membership(session, brand=brand, user=user.id, role=body.role)
    return ok(user_out(user, role=body.role))
