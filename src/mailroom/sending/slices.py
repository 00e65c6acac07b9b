"""Sending one slice of a campaign: render, build, hand to the transport, record every outcome.

A slice is a range of recipient positions, sent by one job. Rows that already hold an email (sent) or an error
(failed for good) are skipped, so a retried or recovered slice only sends what is still pending;
at most the messages in flight when a worker died can go out twice. Results are recorded per chunk
with set-based statements, one transaction per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.crypto import SecretBox
from mailroom.files.storage import LocalStorage
from mailroom.links import unsubscribe_url
from mailroom.metrics import SEND_LATENCY
from mailroom.sending.attachments import AttachmentError, Parts, load_parts
from mailroom.sending.execute import fail_campaign
from mailroom.sending.expansion import SHARED_MESSAGE_LIMIT
from mailroom.sending.mailgun_template import template_send
from mailroom.sending.ratelimit import RateLimiter
from mailroom.sending.record import record, settle_counters
from mailroom.sending.render import RenderedMessage, TemplateError
from mailroom.sending.renderer import CampaignTemplates, RenderPool
from mailroom.serialize import full_name
from mailroom.transports.base import OutgoingMessage, PermanentSendError, SendResult, Transport
from mailroom.transports.mailgun import MAX_TEMPLATE_RECIPIENTS, MailgunTransport
from mailroom.transports.mime import build_segments, make_message_id, message_id_domain

log = logging.getLogger(__name__)

# Outcomes are recorded every CHUNK messages: it bounds what a killed worker can have sent unrecorded.
CHUNK = 100

CAMPAIGN = text(
    """
    SELECT c.id, c.brand, c.subject, c.html, c.text, c.tags, c.individual, c.recipients_count,
           c.failed_at, c.deleted_at, c.updated_at, c.due_at,
           u.email AS sender_email, u.first_name AS sender_first_name, u.last_name AS sender_last_name,
           u.display_name AS sender_display_name, u.phone_number AS sender_phone_number,
           u.email_confirmed AS sender_confirmed
    FROM email_campaigns c JOIN users u ON u.id = c."from"
    WHERE c.id = :id
    """
)

PENDING = text(
    """
    SELECT e.id, e.email_address, e.send_type,
           c.first_name, c.last_name, a.full_name
    FROM email_campaign_emails e
    LEFT JOIN contacts c ON c.id = e.contact
    LEFT JOIN agents a ON a.id = e.agent
    WHERE e.campaign = :campaign AND e.seq BETWEEN :first AND :last AND e.email IS NULL AND e.error IS NULL
    ORDER BY e.seq
    """
)


class RetryLater(Exception):
    """Some messages of the slice met a temporary refusal: run the slice again later."""


@dataclass
class SendContext:
    """What every slice in a worker shares: the transport, the limiter, settings, the renderer."""

    sessionmaker: async_sessionmaker[AsyncSession]
    transport: Transport
    limiter: RateLimiter
    box: SecretBox
    public_url: str
    message_domain: str
    storage: LocalStorage
    # Templates compile and render in its bounded processes, which keep them compiled.
    renderer: RenderPool
    allow_private_links: bool = False
    # From for users who have not confirmed their address (their own goes in Reply-To).
    default_from: str = "no-reply@localhost"
    fetch_deadline: float = 30.0
    _parts: dict[tuple[uuid.UUID, Any], asyncio.Future[Parts]] = field(default_factory=dict)

    async def parts(self, campaign: Any) -> Parts:
        """The campaign's attachments, read (or fetched) and encoded once per worker, not once per slice.

        Slices of one campaign running at the same time wait for the same load instead of each
        holding its own copy; a failed load is not kept, so a retry tries again.
        """
        key = (campaign.id, campaign.updated_at)
        loading = self._parts.get(key)
        if loading is None:
            # Attachments run to tens of MB per campaign: keep those of the few campaigns being sent.
            for old in [k for k, task in self._parts.items() if task.done()][: max(0, len(self._parts) - 3)]:
                del self._parts[old]
            loading = asyncio.ensure_future(
                load_parts(
                    self.sessionmaker,
                    campaign.id,
                    self.storage,
                    allow_private_links=self.allow_private_links,
                    deadline=self.fetch_deadline,
                )
            )
            self._parts[key] = loading
        try:
            # Shielded: one slice being cancelled does not cancel the load the others wait for.
            return await asyncio.shield(loading)
        except Exception:
            if loading.done() and self._parts.get(key) is loading:
                del self._parts[key]
            raise

    def templates(self, campaign: Any) -> CampaignTemplates:
        return CampaignTemplates(campaign.subject or "", campaign.html, campaign.text)


def _sender(campaign: Any) -> dict[str, Any]:
    display = campaign.sender_display_name or full_name(campaign.sender_first_name, campaign.sender_last_name)
    return {
        "first_name": campaign.sender_first_name,
        "last_name": campaign.sender_last_name,
        "display_name": display,
        "email": campaign.sender_email,
        "phone_number": campaign.sender_phone_number,
    }


def _from_header(sender: dict[str, Any], address: str) -> str:
    name = (sender["display_name"] or "").replace('"', "'")
    return f'"{name}" <{address}>' if name else address


def _from_address(ctx: SendContext, campaign: Any) -> str:
    """The user's own address once they have confirmed it; until then the service's (see _headers)."""
    return str(campaign.sender_email) if campaign.sender_confirmed else ctx.default_from


async def send_slice(ctx: SendContext, campaign_id: uuid.UUID, first: int, last: int, *, job: str) -> None:
    async with ctx.sessionmaker() as session:
        campaign = (await session.execute(CAMPAIGN, {"id": campaign_id})).first()
        if campaign is None or campaign.failed_at is not None or campaign.deleted_at is not None:
            return
        rows = (await session.execute(PENDING, {"campaign": campaign_id, "first": first, "last": last})).all()
    if not rows:
        return
    try:
        pending = await _send_rows(ctx, campaign, rows)
    except httpx.HTTPError as exc:
        raise RetryLater(f"attachment could not be fetched yet: {exc}") from exc
    except (AttachmentError, TemplateError, PermanentSendError) as exc:
        # Nothing more of this campaign can go out; the reason is one a user can act on.
        async with ctx.sessionmaker() as session, session.begin():
            await fail_campaign(session, campaign_id, str(exc), job)
        return
    if campaign.due_at is not None:
        SEND_LATENCY.observe(max(0.0, (datetime.now(UTC) - campaign.due_at).total_seconds()))
    if pending:
        raise RetryLater(f"{pending} recipients of campaign {campaign_id} met a temporary refusal")
    async with ctx.sessionmaker() as session, session.begin():
        settled = await settle_counters(session, campaign_id)
    if settled is not None:
        # Two last batches ending at the same moment may both settle: the line can then appear twice.
        log.info(
            "campaign %s finished: %d recipients, %d sent, %d failed, %.1f s since executed",
            campaign_id,
            settled.recipients_count or 0,
            settled.sent,
            settled.failed,
            float(settled.seconds or 0),
            extra={
                "campaign": str(campaign_id),
                "recipients": settled.recipients_count or 0,
                "sent": settled.sent,
                "failed": settled.failed,
                "duration": round(float(settled.seconds or 0), 3),
            },
        )


async def _send_rows(ctx: SendContext, campaign: Any, rows: Sequence[Any]) -> int:
    """Send to the rows; returns how many met a temporary refusal."""
    parts = await ctx.parts(campaign)
    templates = ctx.templates(campaign)
    if not (campaign.individual or (campaign.recipients_count or 0) >= SHARED_MESSAGE_LIMIT):
        return await _send_shared(ctx, campaign, templates, parts, rows)
    # A Mailgun chunk is one API call, and Mailgun takes up to 1,000 recipients in one.
    chunk = MAX_TEMPLATE_RECIPIENTS if isinstance(ctx.transport, MailgunTransport) else CHUNK
    pending = 0
    for start in range(0, len(rows), chunk):
        pending += await _send_individually(ctx, campaign, templates, parts, rows[start : start + chunk])
    return pending


def _headers(ctx: SendContext, campaign: Any, address: str | None) -> dict[str, str]:
    headers = {"Feedback-ID": f"rechat:{campaign.brand}:rechat"}
    if not campaign.sender_confirmed:
        # Replies still reach the user, but nobody can make mail appear to come From an address
        # they have not shown they control.
        headers["Reply-To"] = campaign.sender_email
    if address is not None:
        url = unsubscribe_url(ctx.public_url, ctx.box, campaign.brand, address)
        headers["List-Unsubscribe"] = f"<{url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


@dataclass(frozen=True, slots=True)
class _Identity:
    """Who a campaign's mail is from, worked out once per chunk rather than once per message."""

    sender: dict[str, Any]  # as templates see it
    from_header: str
    envelope_from: str
    id_domain: str  # of Message-IDs
    tags: list[str]  # ESP tags: brand, campaign, the campaign's own


def _identity(ctx: SendContext, campaign: Any) -> _Identity:
    sender = _sender(campaign)
    address = _from_address(ctx, campaign)
    return _Identity(
        sender=sender,
        from_header=_from_header(sender, address),
        envelope_from=address,
        id_domain=message_id_domain(address, ctx.message_domain),
        tags=[str(campaign.brand), str(campaign.id), *(campaign.tags or [])],
    )


def _mime(
    ctx: SendContext,
    campaign: Any,
    parts: Parts,
    who: _Identity,
    message: RenderedMessage,
    *,
    row_id: uuid.UUID,
    to: Sequence[str],
    cc: Sequence[str] = (),
    unsubscribe: str | None,
    date: datetime,
) -> tuple[bytes, ...]:
    # The attachment parts are the cached, shared ones: a message adds only its own head and text.
    return build_segments(
        from_addr=who.from_header,
        to=to,
        cc=cc,
        subject=message.subject,
        text=message.text,
        html=message.html,
        message_id=make_message_id(row_id, who.id_domain),
        date=date,
        headers=_headers(ctx, campaign, unsubscribe),
        inline=parts.inline_parts,
        attachments=parts.attached_parts,
    )


def _recipient(row: Any) -> dict[str, Any]:
    return {
        "first_name": row.first_name,
        "last_name": row.last_name,
        "display_name": full_name(row.first_name, row.last_name) or row.full_name,
        "email": row.email_address,
    }


async def _send_individually(
    ctx: SendContext, campaign: Any, templates: CampaignTemplates, parts: Parts, rows: Sequence[Any]
) -> int:
    who = _identity(ctx, campaign)
    rendered = await ctx.renderer.render(
        templates, [{"recipient": _recipient(row), "sender": who.sender, "email": {"url": ""}} for row in rows]
    )
    subjects = [r.subject for r in rendered]
    await ctx.limiter.acquire(len(rows))
    if isinstance(ctx.transport, MailgunTransport):
        # One API call for the whole chunk (Mailgun batch sending), not one per message.
        results = await ctx.transport.send_template(
            template_send(
                who.from_header,
                rows,
                rendered,
                headers=_headers(ctx, campaign, None),
                unsubscribe=[unsubscribe_url(ctx.public_url, ctx.box, campaign.brand, r.email_address) for r in rows],
                tags=who.tags,
                parts=parts,
            )
        )
    else:
        now = datetime.now(UTC)
        messages = [
            OutgoingMessage(
                str(row.id),
                who.envelope_from,
                [row.email_address],
                _mime(
                    ctx,
                    campaign,
                    parts,
                    who,
                    message,
                    row_id=row.id,
                    to=[row.email_address],
                    unsubscribe=row.email_address,
                    date=now,
                ),
                who.tags,
            )
            for row, message in zip(rows, rendered, strict=True)
        ]
        results = await ctx.transport.send_many(messages)
    return await record(
        ctx.sessionmaker,
        campaign=campaign.id,
        brand=campaign.brand,
        rows=rows,
        results=results,
        subjects=subjects,
        from_header=who.from_header,
        tags=who.tags,
        domain=ctx.message_domain,
        cc=[],
        bcc=[],
    )


async def _send_shared(
    ctx: SendContext, campaign: Any, templates: CampaignTemplates, parts: Parts, rows: Sequence[Any]
) -> int:
    """One message To/Cc/Bcc for the whole campaign, as a person would send it."""
    who = _identity(ctx, campaign)
    by_type: dict[str, list[str]] = {"To": [], "CC": [], "BCC": []}
    for row in rows:
        by_type[row.send_type].append(row.email_address)
    (rendered,) = await ctx.renderer.render(templates, [{"recipient": {}, "sender": who.sender, "email": {"url": ""}}])
    message = _mime(
        ctx,
        campaign,
        parts,
        who,
        rendered,
        row_id=rows[0].id,
        to=by_type["To"],
        cc=by_type["CC"],
        unsubscribe=None,
        date=datetime.now(UTC),
    )
    everyone = [row.email_address for row in rows]
    await ctx.limiter.acquire(1)
    (result,) = await ctx.transport.send_many(
        [OutgoingMessage(str(rows[0].id), who.envelope_from, everyone, message, who.tags)]
    )
    # Every recipient row shares the one message's outcome.
    results = [SendResult(str(row.id), result.provider_id, result.error, result.permanent) for row in rows]
    shared_id = uuid.uuid4()
    return await record(
        ctx.sessionmaker,
        campaign=campaign.id,
        brand=campaign.brand,
        rows=rows,
        results=results,
        subjects=[rendered.subject] * len(rows),
        from_header=who.from_header,
        tags=who.tags,
        domain=ctx.message_domain,
        cc=by_type["CC"],
        bcc=by_type["BCC"],
        to=",".join(by_type["To"]),
        shared_email=shared_id,
    )
