"""What happened after sending: Mailgun's event webhooks in, a campaign's statistics out."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from mailroom.api.auth import CurrentCaller
from mailroom.api.deps import AppSettings, ReadConnection, Session
from mailroom.api.envelope import Ok, ORJSONResponse, ok
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.errors import NotFound
from mailroom.tracking import stats, webhooks
from mailroom.tracking.settle import ECHO_SECONDS

router = APIRouter(tags=["events"], route_class=StrictQueryRoute)

# Public (signed by Mailgun, no bearer token): the body limit middleware keeps its bodies small.
WEBHOOK_PATH = "/emails/events"


@router.post(
    WEBHOOK_PATH,
    response_model=Ok[webhooks.WebhookReceiptOut],
    summary="Mailgun event webhook (signed with the webhook signing key); 404 when no key is configured",
)
async def mailgun_events(request: Request, session: Session, settings: AppSettings) -> ORJSONResponse:
    key = settings.mailgun_webhook_signing_key
    if not key:
        # Without a key no call can be verified: the endpoint does not exist here.
        raise NotFound("no webhook signing key is configured", field="path")
    appended = await webhooks.receive(session, webhooks.parse_body(await request.body()), key)
    return ok(webhooks.receipt(appended))


@router.get(
    "/emails/{id}/stats",
    response_model=Ok[stats.CampaignStatsOut],
    summary="What happened to a campaign's emails: counts, hours, links, failures",
    description=(
        f"Opens and clicks within {ECHO_SECONDS} seconds of sending, opens fetched by a mail provider's "
        "image proxy and clicks by link scanners (every link of an email within one second) are kept but "
        "not counted: they say nothing about the person. `set_aside` shows them by rule. A sender who "
        "opens their own mail at once sees it under `early`."
    ),
)
async def campaign_stats(id: uuid.UUID, caller: CurrentCaller, conn: ReadConnection) -> ORJSONResponse:
    return ok(await stats.campaign_stats(conn, id, caller.user.id))
