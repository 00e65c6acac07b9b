"""The caller's notifications: a recipient of their campaign opened or clicked."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path

from mailroom.api.auth import CurrentCaller
from mailroom.api.deps import ReadConnection, Session
from mailroom.api.envelope import Ok, OkList, ORJSONResponse, ok, ok_list
from mailroom.api.paging import Limit, Start
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.tracking.notifications import NotificationOut, list_notifications, mark_seen, notification_out

router = APIRouter(tags=["notifications"], route_class=StrictQueryRoute)


@router.get(
    "/notifications",
    response_model=OkList[NotificationOut],
    summary="The caller's notifications, newest first",
    description="`kind` is `clicked` (one per click, with the link's `url`) or `opened` (opens of one recipient "
    "less than 5 minutes apart are one notification; `count` says how many). `created_at` is when the first of "
    "them happened, `updated_at` when the latest did, `seen_at` when the caller marked it seen (null until then).",
)
async def get_notifications(
    caller: CurrentCaller, conn: ReadConnection, start: Start = 0, limit: Limit = 100
) -> ORJSONResponse:
    rows, total = await list_notifications(conn, user=caller.user.id, start=start, limit=limit)
    return ok_list([notification_out(row) for row in rows], total=total)


@router.put(
    "/notifications/{id}/seen",
    response_model=Ok[NotificationOut],
    summary="Mark one of the caller's notifications seen",
)
async def put_seen(
    notification: Annotated[uuid.UUID, Path(alias="id")], caller: CurrentCaller, session: Session
) -> ORJSONResponse:
    return ok(notification_out(await mark_seen(session, user=caller.user.id, notification=notification)))
