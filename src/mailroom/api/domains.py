"""The caller's sending domain: what is set up for their address domain, and verifying its DNS records."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from mailroom.api.auth import CurrentCaller
from mailroom.api.deps import AppSettings, Secrets, Session
from mailroom.api.envelope import Ok, OkList, ok, ok_list
from mailroom.api.errors import ERROR_SCHEMA
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.domains import service

router = APIRouter(tags=["sending domains"], route_class=StrictQueryRoute)

_ERROR = {"application/json": {"schema": ERROR_SCHEMA}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The caller's address is not confirmed, or is at a mailbox provider", "content": _ERROR},
}


@router.get(
    "/emails/domain",
    response_model=Ok[service.DomainOut],
    summary="Get information about the domain of the current user",
    responses={**_RESPONSES, 404: {"description": "No sending domain is set up for it", "content": _ERROR}},
)
async def get_domain(caller: CurrentCaller, session: Session) -> Response:
    return ok(service.view(await service.get_domain(session, caller.user)))


@router.put(
    "/emails/domain/verify",
    response_model=OkList[service.DnsRecordOut],
    summary="Set up the sending domain of the caller's address and check its DNS records now",
    responses={**_RESPONSES, 502: {"description": "Mailgun refused or could not be reached", "content": _ERROR}},
)
async def verify_domain(caller: CurrentCaller, session: Session, settings: AppSettings, box: Secrets) -> Response:
    records = await service.verify(session, caller.user, settings=settings, box=box)
    return ok_list(records, total=len(records))
