"""A brand's suppression list: read by its members, lifted by its Admins."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from mailroom.api.auth import CurrentCaller
from mailroom.api.deps import Session
from mailroom.api.envelope import OkList, ORJSONResponse, ok_list
from mailroom.api.paging import Limit, Start
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crm.membership import require_admin, require_member
from mailroom.tracking.suppressions import SuppressionOut, lift_suppression, list_suppressions, suppression_out
from mailroom.validation import PlainText

router = APIRouter(tags=["suppressions"], route_class=StrictQueryRoute)

# Longer than any address (254), so a pasted address with stray spaces still reaches the lookup.
AddressPath = Annotated[PlainText, Path(min_length=1, max_length=320)]


@router.get(
    "/brands/{brand}/suppressions",
    response_model=OkList[SuppressionOut],
    summary="Addresses the brand no longer mails, newest first; `q` finds an address by any part of it",
    description="Members of the brand, or of a brand above it, may read it. `reason` is `unsubscribed`, "
    "`complained` or `bounced`; `detail` is what the provider said, when it said anything.",
)
async def get_suppressions(
    brand: uuid.UUID,
    caller: CurrentCaller,
    session: Session,
    start: Start = 0,
    limit: Limit = 100,
    q: Annotated[PlainText | None, Query(min_length=1, max_length=254, description="part of an address")] = None,
) -> ORJSONResponse:
    await require_member(session, caller.user.id, brand)
    rows, total = await list_suppressions(session, brand=brand, start=start, limit=limit, q=q)
    return ok_list([suppression_out(row) for row in rows], total=total)


@router.delete(
    "/brands/{brand}/suppressions/{address}",
    status_code=204,
    response_class=Response,
    summary="Mail a suppressed address again (an Admin, once the recipient has consented again)",
    description="Only the suppression is removed. A contact tagged `Unsubscribed` keeps the tag: it is the "
    "contact's own record, changed only on the contact, and until then that contact's addresses stay out of "
    "campaigns. The address is compared lower-cased and trimmed. Answers 404 when the brand has not suppressed it.",
)
async def delete_suppression(
    brand: uuid.UUID, address: AddressPath, caller: CurrentCaller, session: Session
) -> Response:
    await require_admin(session, caller.user.id, brand)
    await lift_suppression(session, brand=brand, address=address)
    return Response(status_code=204)
