"""A test send: a campaign once, to the caller's own confirmed address, counting nowhere.

The API checks and queues (``queue_test``); the worker sends (``send_test``), as with every other mail.
The message is the one a recipient would get, built by the send path's own builder (sending/slices.py)
on the route the campaign would take (its connected mailbox, else the ESP), From the same identity,
with the same attachments and headers, rendered for the caller as the recipient, its subject prefixed
``[Test] ``. What differs is what a test must not touch: no recipient row, emails row, counter, event or
quota use is recorded; its links are not tracked and ``{{ email.url }}`` is empty, since there is no
emails row for either to name; and a failure is logged rather than failing the campaign.

Each caller may send ``BURST`` tests of a campaign in a row, then one every ``REFILL`` seconds: the
state is one row of send_rate per campaign and caller (the same cell rate algorithm as the ESP's rate,
sending/ratelimit.py), so no log of tests is kept, and rows whose time has passed are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import TypedDict

from mailroom.campaigns import reads
from mailroom.db import driver_connection
from mailroom.errors import BadRequest, Conflict, NotFound, TooManyRequests
from mailroom.mailboxes.access import mailbox_options
from mailroom.queue import defer_jobs, defer_statement
from mailroom.sending.attachments import AttachmentError, Parts
from mailroom.sending.context import SendContext
from mailroom.sending.footer import with_footer
from mailroom.sending.slices import RetryLater, _Builder, _Letter, _Route
from mailroom.sending.to_send import CampaignToSend, PendingRow, load_campaign
from mailroom.serialize import closed
from mailroom.templating.render import RenderedMessage, TemplateError
from mailroom.templating.renderer import CampaignTemplates, RenderPool
from mailroom.transports.base import PermanentSendError, SendResult, TransientSendError

log = logging.getLogger(__name__)

TEST_TASK = "mailroom.send_test"
SUBJECT_PREFIX = "[Test] "
# Enough to try an edit a few times in a row; few enough that nobody floods an inbox, or the ESP, with them.
BURST = 10
REFILL = 360.0

DEFER_TEST = defer_statement("SELECT CAST(:args AS jsonb)")

CALLER = text(
    """
    SELECT email, email_confirmed, first_name, last_name, display_name FROM users
    WHERE id = :id AND deleted_at IS NULL
    """
)
# Take one test from the caller's allowance for the campaign, unless that would run past BURST: the row
# holds when the allowance is full again, and a refusal leaves it as it is (RETURNING then gives no row).
# The row stays locked until the request's transaction ends, so two requests at once cannot both take the last.
TAKE = text(
    """
    INSERT INTO send_rate (transport, next_at) VALUES (:key, now() + make_interval(secs => :refill))
    ON CONFLICT (transport) DO UPDATE
        SET next_at = greatest(send_rate.next_at, now()) + make_interval(secs => :refill)
        WHERE greatest(send_rate.next_at, now()) + make_interval(secs => :refill)
            <= now() + make_interval(secs => :window)
    RETURNING next_at
    """
)
WAIT = text("SELECT extract(epoch FROM next_at - now()) FROM send_rate WHERE transport = :key")
# An allowance that is full again says nothing a missing row does not. Rows another request holds are
# left for later: waiting on them could deadlock with that request, which may be waiting on one of ours.
FORGET_FULL = text(
    """
    DELETE FROM send_rate WHERE transport IN (
        SELECT transport FROM send_rate WHERE transport LIKE 'test:%' AND next_at < now() FOR UPDATE SKIP LOCKED
    )
    """
)


@closed
class QueuedTestOut(TypedDict):
    """The test is queued: the worker sends it within moments."""

    to: str
    queued: bool


def _rate_key(campaign: uuid.UUID, user: uuid.UUID) -> str:
    return f"test:{campaign}:{user}"


def _recipient(caller: Any) -> PendingRow:
    # A row of no table: the caller as a recipient, named by an id that is nowhere stored.
    return PendingRow(uuid.uuid4(), caller.email, "To", caller.first_name, caller.last_name, caller.display_name)


def _untracked(campaign: CampaignToSend) -> CampaignToSend:
    """The campaign as a test sends it: no tracked links or pixel, no view-in-browser link."""
    return dataclasses.replace(campaign, tracking=False, archive=False)


async def queue_test(
    session: AsyncSession, renderer: RenderPool, campaign_id: uuid.UUID, user: uuid.UUID
) -> QueuedTestOut:
    """Check that the campaign can be tested by ``user`` and queue the test in the session's transaction."""
    await reads.visible_campaign(await driver_connection(session), campaign_id, user)
    caller = (await session.execute(CALLER, {"id": user})).first()
    campaign = await load_campaign(session, campaign_id)
    if caller is None or campaign is None:
        raise NotFound("no such campaign", field="id")
    if not caller.email_confirmed:
        # The test goes to the caller's address: one not shown to be theirs could be anybody's.
        raise Conflict(
            "is not confirmed yet; follow the link mailed to it (POST /users/self/email-confirmation sends "
            "another) before sending a test",
            field="email",
        )
    campaign = _untracked(campaign)
    context = {
        "recipient": _recipient(caller).template_values(),
        "sender": campaign.sender.template_values(),
        "email": {"url": ""},
    }
    try:
        await renderer.render(CampaignTemplates(campaign.subject, campaign.html, campaign.text), [context])
    except TemplateError as exc:
        # Checked with the sample recipient when saved, but not with the caller's values (a bound, a type error).
        raise BadRequest(str(exc).removeprefix(f"{exc.field}: "), field=exc.field or "html") from None
    await _take_one(session, campaign_id, user)
    args = json.dumps({"campaign": str(campaign_id), "user": str(user)})
    await defer_jobs(session, DEFER_TEST, TEST_TASK, args=args)
    return {"to": caller.email, "queued": True}


async def _take_one(session: AsyncSession, campaign: uuid.UUID, user: uuid.UUID) -> None:
    key = _rate_key(campaign, user)
    await session.execute(FORGET_FULL)
    if (await session.execute(TAKE, {"key": key, "refill": REFILL, "window": REFILL * BURST})).first() is not None:
        return
    wait = float((await session.execute(WAIT, {"key": key})).scalar_one()) - REFILL * (BURST - 1)
    minutes = max(1, math.ceil(wait / 60))
    raise TooManyRequests(
        f"{BURST} tests of this campaign were sent in a row; the next one can be sent in {minutes} "
        f"minute{'s' if minutes > 1 else ''} (then one every {REFILL / 60:.0f} minutes)",
        field="id",
    )


async def send_test(ctx: SendContext, campaign_id: uuid.UUID, user: uuid.UUID) -> None:
    """Send the test; a refusal is logged and changes nothing. Retried (raises) only on temporary failures."""
    async with ctx.sessionmaker() as session:
        campaign = await load_campaign(session, campaign_id)
        caller = (await session.execute(CALLER, {"id": user})).first()
    if campaign is None or campaign.deleted or caller is None or not caller.email_confirmed:
        log.info("test of campaign %s for user %s not sent: gone or unconfirmed since it was queued", campaign_id, user)
        return
    campaign = _untracked(campaign)
    letter = _Letter.to_one(_recipient(caller))
    try:
        result = await _send(ctx, campaign, letter)
    except httpx.HTTPError as exc:
        raise RetryLater(f"attachment could not be fetched yet: {exc}") from exc
    except (AttachmentError, TemplateError, PermanentSendError) as exc:
        result = SendResult(str(letter.rows[0].id), None, str(exc), permanent=True)
    if result.accepted:
        log.info("test of campaign %s sent to %s", campaign_id, caller.email, extra={"campaign": str(campaign_id)})
    elif result.permanent:
        log.warning(
            "test of campaign %s to %s refused: %s",
            campaign_id,
            caller.email,
            result.error,
            extra={"campaign": str(campaign_id)},
        )
    else:
        raise TransientSendError(result.error or "not sent")


async def _send(ctx: SendContext, campaign: CampaignToSend, letter: _Letter) -> SendResult:
    parts = await ctx.attachments.parts(campaign.id, campaign.updated_at)
    if ctx.mailboxes.takes(campaign):
        assert campaign.mailbox is not None
        async with ctx.mailboxes.open(campaign) as transport:
            route = _Route(transport, campaign.mailbox, mailbox_options(campaign.mailbox, campaign.headers))
            try:
                return await _send_letter(ctx, campaign, parts, route, letter)
            except TransientSendError as exc:
                # The mailbox is throttled for the campaign's own mail as much as for its test.
                raise await ctx.mailboxes.pause(campaign, exc) from exc
    return await _send_letter(ctx, campaign, parts, _Route(ctx.esp.transport, "esp"), letter)


async def _send_letter(
    ctx: SendContext, campaign: CampaignToSend, parts: Parts, route: _Route, letter: _Letter
) -> SendResult:
    """_send_letters of sending/slices.py for one letter, recording nothing."""
    who = ctx.esp.identity(campaign, mailbox=route.mailbox)
    own = await ctx.esp.own_domain(who)
    templates = CampaignTemplates(campaign.subject, campaign.html, campaign.text)
    (message,) = await ctx.renderer.render(templates, [letter.template_values(ctx, campaign, who)])
    message = RenderedMessage(SUBJECT_PREFIX + message.subject, message.html, message.text)
    if not route.mailbox:
        # The test shows the footer a recipient would see (mail through the user's own mailbox has none).
        if letter.personal:
            message = with_footer(message, letter.unsubscribe_url(ctx, campaign))
        await ctx.esp.limiter.acquire(1)
    build = _Builder.for_chunk(ctx, campaign, route, parts, who, own, tracking=False)
    (result,) = await route.transport.send_many([build(letter, message)])
    return result
