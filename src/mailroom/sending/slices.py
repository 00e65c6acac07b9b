"""Sending one slice of a campaign: pick the route, render, build, hand to the transport, record every outcome.

A slice is a range of recipient positions, sent by one job. Rows that already hold an email (sent) or an error
(failed for good) are skipped, so a retried or recovered slice only sends what is still pending;
at most the messages in flight when a worker died can go out twice. Results are recorded per chunk
with set-based statements, one transaction per chunk.

The route: a campaign with a connected Gmail or Outlook mailbox goes out through it when its one shared
message fits that mailbox's recipient limit; individual campaigns, bigger ones and the rest go through
the ESP (Mailgun, SMTP or the outbox).

Tracking: Mailgun tracks opens and clicks itself when asked; through any other transport the html's links
are rewritten and a pixel added (tracking_links.py), naming the emails row, whose id is therefore
chosen before the message is built. With ``archive``, ``{{email.url}}`` is the recipient's view-in-browser link.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.crypto import SecretBox
from mailroom.files.storage import Storage
from mailroom.mailboxes.access import Mailboxes
from mailroom.metrics import SEND_LATENCY
from mailroom.sending.attachments import AttachmentError, Parts, load_parts
from mailroom.sending.domains import OwnDomain, SendingDomains
from mailroom.sending.execute import fail_campaign
from mailroom.sending.identity import Identity, headers, identity
from mailroom.sending.ratelimit import RateLimiter
from mailroom.sending.record import ChunkOutcome, record, settle_counters
from mailroom.sending.to_send import CampaignToSend, PendingRow, load_campaign, load_pending
from mailroom.templating.render import RenderedMessage, TemplateError
from mailroom.templating.renderer import CampaignTemplates, RenderPool
from mailroom.tracking_links import LinkRewriter, TrackingTokens, view_url
from mailroom.transports.base import (
    MessageContent,
    OutgoingMessage,
    PermanentSendError,
    SendResult,
    TransientSendError,
    Transport,
)
from mailroom.transports.mime import build_segments, make_message_id

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Some messages of the slice met a temporary refusal: run the slice again later."""


@dataclass
class SendContext:
    """What every slice in a worker shares: the transports, the limiter, settings, the renderer."""

    sessionmaker: async_sessionmaker[AsyncSession]
    transport: Transport
    limiter: RateLimiter
    box: SecretBox
    public_url: str
    message_domain: str
    storage: Storage
    # Templates compile and render in its bounded processes, which keep them compiled.
    renderer: RenderPool
    # Builds the Gmail or Outlook transport of a campaign's connected mailbox.
    mailboxes: Mailboxes
    allow_private_links: bool = False
    # From for users who have not confirmed their address (their own goes in Reply-To).
    default_from: str = "no-reply@localhost"
    fetch_deadline: float = 30.0
    # MAILROOM_TRACKING: opens and clicks tracked (per campaign too, see CampaignToSend.tracking).
    tracking: bool = True
    # Users' verified sending domains (DKIM keys, Mailgun domains).
    domains: SendingDomains | None = None
    _parts: dict[tuple[uuid.UUID, Any], asyncio.Future[Parts]] = field(default_factory=dict)
    tokens: TrackingTokens = field(init=False)
    rewriter: LinkRewriter = field(init=False)

    def __post_init__(self) -> None:
        # Built once per worker: the purpose keys are derived and keyed once, not per message.
        self.tokens = TrackingTokens(self.box)
        self.rewriter = LinkRewriter(self.tokens, self.public_url)

    def tracked_by(self, campaign: CampaignToSend, transport: Transport) -> Literal["us", "provider"] | None:
        """Who tracks the campaign's opens and clicks on this transport, if anyone."""
        if not (self.tracking and campaign.tracking):
            return None
        return "provider" if transport.tracks_itself else "us"

    def email_values(self, campaign: CampaignToSend, row: uuid.UUID, *, personal: bool) -> dict[str, str]:
        """What templates see as ``email``: its view-in-browser link when the campaign is archived."""
        if not campaign.archive:
            return {"url": ""}
        return {"url": view_url(self.public_url, self.tokens, row, personal=personal)}

    def track(
        self, rendered: Sequence[RenderedMessage], email_ids: Sequence[uuid.UUID]
    ) -> tuple[list[RenderedMessage], list[Sequence[str] | None]]:
        """The messages with tracked links and a pixel in their html, and each one's original links."""
        messages: list[RenderedMessage] = []
        links: list[Sequence[str] | None] = []
        for message, email_id in zip(rendered, email_ids, strict=True):
            if message.html is None:
                messages.append(message)
                links.append(None)
                continue
            tracked = self.rewriter.rewrite(message.html, email_id)
            messages.append(RenderedMessage(message.subject, tracked.html, message.text))
            links.append(tracked.links)
        return messages, links

    async def parts(self, campaign: CampaignToSend) -> Parts:
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

    def identity(self, campaign: CampaignToSend, *, mailbox: bool) -> Identity:
        return identity(campaign, mailbox=mailbox, default_from=self.default_from, message_domain=self.message_domain)

    def headers(self, campaign: CampaignToSend, who: Identity, address: str | None) -> dict[str, str]:
        return headers(campaign, who, box=self.box, public_url=self.public_url, address=address)

    async def own_domain(self, who: Identity) -> OwnDomain | None:
        """The From's verified domain, when mail goes out as it (through the ESP, never a mailbox)."""
        if who.mailbox or self.domains is None:
            return None
        return await self.domains.for_address(who.envelope_from)


@dataclass(frozen=True, slots=True)
class _Route:
    transport: Transport
    # "esp", or the kind of mailbox ("google", "microsoft") the mail goes out through.
    name: str

    @property
    def mailbox(self) -> bool:
        return self.name != "esp"


async def send_slice(ctx: SendContext, campaign_id: uuid.UUID, first: int, last: int, *, job: str) -> None:
    async with ctx.sessionmaker() as session:
        campaign = await load_campaign(session, campaign_id)
        if campaign is None or campaign.failed or campaign.deleted:
            return
        rows = await load_pending(session, campaign_id, first, last)
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
        route = campaign.mailbox if ctx.mailboxes.takes(campaign) else ctx.transport.name
        log.info(
            "campaign %s finished through %s: %d recipients, %d sent, %d failed, %.1f s since executed",
            campaign_id,
            route,
            settled.recipients_count or 0,
            settled.sent,
            settled.failed,
            float(settled.seconds or 0),
            extra={
                "campaign": str(campaign_id),
                "transport": route,
                "recipients": settled.recipients_count or 0,
                "sent": settled.sent,
                "failed": settled.failed,
                "duration": round(float(settled.seconds or 0), 3),
            },
        )


async def _send_rows(ctx: SendContext, campaign: CampaignToSend, rows: Sequence[PendingRow]) -> int:
    """Send to the rows; returns how many met a temporary refusal."""
    parts = await ctx.parts(campaign)
    templates = CampaignTemplates(campaign.subject, campaign.html, campaign.text)
    if ctx.mailboxes.takes(campaign):
        assert campaign.mailbox is not None
        async with ctx.mailboxes.open(campaign) as transport:
            try:
                return await _send_shared(ctx, campaign, templates, parts, rows, _Route(transport, campaign.mailbox))
            except TransientSendError as exc:
                # Throttled or briefly unavailable: that mailbox waits, the campaign does not fail for it.
                raise await ctx.mailboxes.pause(campaign, exc) from exc
    route = _Route(ctx.transport, "esp")
    if campaign.shared:
        return await _send_shared(ctx, campaign, templates, parts, rows, route)
    chunk = ctx.transport.max_recipients_per_call
    pending = 0
    for start in range(0, len(rows), chunk):
        pending += await _send_individually(ctx, campaign, templates, parts, rows[start : start + chunk])
    return pending


def _mime(
    ctx: SendContext,
    campaign: CampaignToSend,
    parts: Parts,
    who: Identity,
    message: RenderedMessage,
    *,
    row_id: uuid.UUID,
    to: Sequence[str],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    headers: dict[str, str],
    date: datetime,
    own: OwnDomain | None = None,
) -> tuple[bytes, ...]:
    # The attachment parts are the cached, shared ones: a message adds only its own head and text.
    segments = build_segments(
        from_addr=who.from_header,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=message.subject,
        text=message.text,
        html=message.html,
        message_id=make_message_id(row_id, who.id_domain),
        date=date,
        headers=headers,
        inline=parts.inline_parts,
        attachments=parts.attached_parts,
    )
    return own.sign(segments) if own is not None else segments


async def _send_individually(
    ctx: SendContext, campaign: CampaignToSend, templates: CampaignTemplates, parts: Parts, rows: Sequence[PendingRow]
) -> int:
    who = ctx.identity(campaign, mailbox=False)
    own = await ctx.own_domain(who)
    rendered = await ctx.renderer.render(
        templates,
        [
            {
                "recipient": row.template_values(),
                "sender": who.sender,
                "email": ctx.email_values(campaign, row.id, personal=True),
            }
            for row in rows
        ],
    )
    email_ids = [uuid.uuid4() for _ in rows]
    tracked_by = ctx.tracked_by(campaign, ctx.transport)
    links: list[Sequence[str] | None] | None = None
    if tracked_by == "us":
        rendered, links = ctx.track(rendered, email_ids)
    await ctx.limiter.acquire(len(rows))
    now = datetime.now(UTC)
    # A transport that builds messages from fields (Mailgun's batch sending) needs no MIME of them.
    with_mime = not ctx.transport.builds_from_fields
    shared_headers = own.headers(who.envelope_from) if own is not None else {}
    messages = []
    for row, message in zip(rows, rendered, strict=True):
        message_headers = ctx.headers(campaign, who, row.email_address) | shared_headers
        messages.append(
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
                    headers=message_headers,
                    date=now,
                    own=own,
                )
                if with_mime
                else None,
                who.tags,
                content=None if with_mime else _content(who, message, parts, message_headers, to=[row.email_address]),
                tracking=tracked_by == "provider",
                domain=own.mailgun_domain if own else None,
            )
        )
    results = await ctx.transport.send_many(messages)
    return await record(
        ctx.sessionmaker,
        ChunkOutcome(
            campaign=campaign.id,
            rows=rows,
            results=results,
            subjects=[r.subject for r in rendered],
            from_header=who.from_header,
            tags=who.tags,
            headers=_stored_headers(ctx.headers(campaign, who, None)),
            domain=(own and own.mailgun_domain) or ctx.message_domain,
            email_ids=email_ids,
            links=links if links is not None else [None] * len(rows),
        ),
    )


def _content(
    who: Identity,
    message: RenderedMessage,
    parts: Parts,
    headers: dict[str, str],
    *,
    to: Sequence[str],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
) -> MessageContent:
    return MessageContent(
        from_addr=who.from_header,
        subject=message.subject,
        html=message.html,
        text=message.text,
        to=to,
        cc=cc,
        bcc=bcc,
        attachments=parts.attached,
        inline=parts.inline,
        headers=headers,
    )


def _stored_headers(sent: dict[str, str]) -> dict[str, str]:
    """What the emails row keeps of a message's headers: those that say where it belongs, not per-recipient links."""
    return {name: value for name, value in sent.items() if name in ("Feedback-ID", "In-Reply-To", "References")}


async def _send_shared(
    ctx: SendContext,
    campaign: CampaignToSend,
    templates: CampaignTemplates,
    parts: Parts,
    rows: Sequence[PendingRow],
    route: _Route,
) -> int:
    """One message To/Cc/Bcc for the whole campaign, as a person would send it."""
    who = ctx.identity(campaign, mailbox=route.mailbox)
    by_type: dict[str, list[str]] = {"To": [], "CC": [], "BCC": []}
    for row in rows:
        by_type[row.send_type].append(row.email_address)
    # One message for everyone: its view link names the first recipient row, rendered for nobody in particular.
    email_values = ctx.email_values(campaign, rows[0].id, personal=False)
    (rendered,) = await ctx.renderer.render(templates, [{"recipient": {}, "sender": who.sender, "email": email_values}])
    email_id = uuid.uuid4()
    tracked_by = ctx.tracked_by(campaign, route.transport)
    links: Sequence[str] | None = None
    if tracked_by == "us":
        (rendered,), (links,) = ctx.track([rendered], [email_id])
    sent_headers = ctx.headers(campaign, who, None)
    own = await ctx.own_domain(who)
    if own is not None:
        sent_headers.update(own.headers(who.envelope_from))
    message = _mime(
        ctx,
        campaign,
        parts,
        who,
        rendered,
        row_id=rows[0].id,
        to=by_type["To"],
        cc=by_type["CC"],
        # A mailbox API reads every recipient from the message itself (and strips Bcc before delivery).
        bcc=by_type["BCC"] if route.mailbox else (),
        headers=sent_headers,
        date=datetime.now(UTC),
        own=own,
    )
    content = None
    if route.transport.builds_from_fields:
        content = _content(who, rendered, parts, sent_headers, to=by_type["To"], cc=by_type["CC"], bcc=by_type["BCC"])
    everyone = [row.email_address for row in rows]
    if not route.mailbox:
        await ctx.limiter.acquire(1)
    (result,) = await route.transport.send_many(
        [
            OutgoingMessage(
                str(rows[0].id),
                who.envelope_from,
                everyone,
                message,
                who.tags,
                content=content,
                thread_id=campaign.headers.get("thread_id") if route.name == "google" else None,
                reply_to_id=campaign.headers.get("message_id") if route.name == "microsoft" else None,
                tracking=tracked_by == "provider",
                domain=own.mailgun_domain if own else None,
            )
        ]
    )
    # Every recipient row shares the one message's outcome.
    results = [
        SendResult(str(row.id), result.provider_id, result.error, result.permanent, result.thread_id) for row in rows
    ]
    return await record(
        ctx.sessionmaker,
        ChunkOutcome(
            campaign=campaign.id,
            rows=rows,
            results=results,
            subjects=[rendered.subject] * len(rows),
            from_header=who.from_header,
            tags=who.tags,
            headers=_stored_headers(sent_headers),
            domain=None if route.mailbox else (own and own.mailgun_domain) or ctx.message_domain,
            route=route.name,
            credential=campaign.credential if route.mailbox else None,
            cc=by_type["CC"],
            bcc=by_type["BCC"],
            to=",".join(by_type["To"]),
            email_ids=[email_id] * len(rows),
            links=[links] * len(rows),
        ),
    )
