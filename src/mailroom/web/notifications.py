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
from mailroom.web import sign_in
from mailroom.web.guard import SESSION_COOKIE, csrf_anchor
from mailroom.web.pages import SIGN_IN_PAGE, App, _form_with_csrf, _me, _not_found, _redirect, _refused
from mailroom.web.render import render

PAGE_SIZE = 50
NOTIFICATIONS_PAGE = "/app/notifications"

router = APIRouter(prefix="/app", include_in_schema=False, route_class=StrictQueryRoute)


@router.get("/notifications")
async def notifications(
    request: Request, app: App, session: Session, page: Annotated[int, Query(ge=1, le=100_000)] = 1
) -> Response:
    user = await sign_in.session_user(session, request.cookies.get(SESSION_COOKIE))
    if user is None:
        return _redirect(SIGN_IN_PAGE)
    rows, total = await list_notifications(
        await driver_connection(session), user=user, start=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    return render(
        "notifications.html",
        app.box,
        csrf_anchor(request),
        user=await _me(session, user),
        rows=rows,
        total=total,
        q="",
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
    )


@router.post("/notifications/{notification}/seen")
async def seen(request: Request, app: App, session: Session, notification: uuid.UUID) -> Response:
    user = await sign_in.session_user(session, request.cookies.get(SESSION_COOKIE))
    if user is None:
        return _redirect(SIGN_IN_PAGE)
    if await _form_with_csrf(request, app) is None:
        return _refused(request, app)
    try:
        await mark_seen(session, user=user, notification=notification)
    except NotFound:
        return _not_found(request, app, user=await _me(session, user))
    return _redirect(NOTIFICATIONS_PAGE)
