"""The workspace's notifications: who opened or clicked the user's campaigns, newest first.

The same list as `GET /notifications`, each markable as seen as `PUT /notifications/{id}/seen` does; another
user's notification answers 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from mailroom.api.deps import Session
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.db import driver_connection
from mailroom.errors import NotFound
from mailroom.tracking.notifications import list_notifications, mark_seen
from mailroom.web.guard import csrf_anchor
from mailroom.web.pages import SIGN_IN_PAGE, App, form_with_csrf, not_found, redirect, refused, signed_in, user_row
from mailroom.web.render import render

PAGE_SIZE = 50
NOTIFICATIONS_PAGE = "/app/notifications"

router = APIRouter(prefix="/app", include_in_schema=False, route_class=StrictQueryRoute)


@router.get("/notifications")
async def notifications(
    request: Request, app: App, session: Session, page: Annotated[int, Query(ge=1, le=100_000)] = 1
) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    rows, total = await list_notifications(
        await driver_connection(session), user=user, start=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    return render(
        "notifications.html",
        app.box,
        csrf_anchor(request),
        user=await user_row(session, user),
        rows=rows,
        total=total,
        q="",
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
    )


@router.post("/notifications/{notification}/seen")
async def seen(request: Request, app: App, session: Session, notification: uuid.UUID) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    if await form_with_csrf(request, app) is None:
        return refused(request, app)
    try:
        await mark_seen(session, user=user, notification=notification)
    except NotFound:
        return not_found(request, app, user=await user_row(session, user))
    return redirect(NOTIFICATIONS_PAGE)
