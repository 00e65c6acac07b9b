"""The workspace's suppression list: the addresses a brand no longer mails, which an Admin can mail again.

The same rules as `/brands/{brand}/suppressions`: any member may read the list, only an Admin lifts an
address (once the person has consented again), and a brand the user does not reach answers 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from mailroom.api.deps import Session
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crm.membership import member_role, user_brands
from mailroom.errors import NotFound
from mailroom.tracking.suppressions import lift_suppression, list_suppressions
from mailroom.web.guard import csrf_anchor
from mailroom.web.pages import (
    SIGN_IN_PAGE,
    App,
    brand_name,
    form_with_csrf,
    not_found,
    redirect,
    refused,
    signed_in,
    user_row,
)
from mailroom.web.render import render

PAGE_SIZE = 50

router = APIRouter(prefix="/app", include_in_schema=False, route_class=StrictQueryRoute)


@router.get("/brands/{brand}/suppressions")
async def suppressions(
    request: Request,
    app: App,
    session: Session,
    brand: uuid.UUID,
    q: Annotated[str, Query(max_length=254)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    me = await user_row(session, user)
    role = await member_role(session, user, brand)
    if role is None:
        return not_found(request, app, user=me)
    rows, total = await list_suppressions(
        session, brand=brand, start=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, q=q.strip() or None
    )
    brands = await user_brands(session, user)
    return render(
        "suppressions.html",
        app.box,
        csrf_anchor(request),
        user=me,
        brand=brand,
        brand_name=brand_name(brands, brand),
        admin=role == "Admin",
        rows=rows,
        total=total,
        q=q,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
    )


@router.post("/brands/{brand}/suppressions/lift")
async def lift(request: Request, app: App, session: Session, brand: uuid.UUID) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    fields = await form_with_csrf(request, app)
    role = await member_role(session, user, brand)
    if role is None:
        return not_found(request, app, user=await user_row(session, user))
    if fields is None or role != "Admin":
        return refused(request, app)
    try:
        await lift_suppression(session, brand=brand, address=fields.get("address", ""))
    except NotFound:
        return not_found(request, app, user=await user_row(session, user))
    return redirect(f"/app/brands/{brand}/suppressions")
