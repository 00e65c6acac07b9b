"""Sending one slice of a campaign: pick the route, render, build, hand to the transport, record every outcome.

A slice is a range of recipient positions, sent by one job. Rows that already hold an email (sent) or an error
(failed for good) are skipped, so a retried or recovered slice only sends what is still pending;
at most the messages in flight when a worker died can go out twice. Results are recorded per chunk
with set-based statements, one transaction per chunk.

The route: a campaign with a connected Gmail or Outlook mailbox goes out through it when its one shared
message fits that mailbox's recipient limit; individual campaigns, bigger ones and the rest go through
the ESP (Mailgun, SMTP or the outbox).

What goes out is a list of letters (``_Letter``): one per recipient for individual mail, or one shared
message To/Cc/Bcc for everyone. Both are rendered, tracked, built and recorded by the same code; a letter
says who it is for and whether it is personal.

Tracking: a transport that tracks opens and clicks itself (Mailgun) is asked to; through any other the html's
links are rewritten and a pixel added (tracking_links.py), naming the emails row, whose id is therefore
chosen before the message is built. With ``archive``, ``{{email.url}}`` is the recipient's view-in-browser link.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from mailroom.mailboxes.access import mailbox_options
from mailroom.metrics import SEND_LATENCY
from mailroom.sending.attachments import AttachmentError, Parts
from mailroom.sending.context import SendContext
from mailroom.sending.domains import OwnDomain
from mailroom.sending.execute import fail_campaign
from mailroom.sending.footer import with_footer
from mailroom.sending.identity import Identity
from mailroom.sending.record import ChunkOutcome, record, settle_counters
from mailroom.sending.to_send import CampaignToSend, PendingRow, load_campaign, load_pending
from mailroom.templating.render import RenderedMessage, TemplateError
from mailroom.templating.renderer import CampaignTemplates
from mailroom.transports.base import (
    MessageContent,
    OutgoingMessage,
    PermanentSendError,
    RouteOptions,
    SendResult,
    TransientSendError,
    Transport,
)
from mailroom.transports.mime import build_segments, make_message_id

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Some messages of the slice met a temporary refusal: run the slice again later."""


@dataclass(frozen=True, slots=True)
class _Route:
    transport: Transport
    # "esp", or the kind of mailbox ("google", "microsoft") the mail goes out through: where record() puts ids.
    name: str
    # What only this route's transport reads from a message (the Gmail thread it joins, ...).
    options: RouteOptions | None = None

    @property
    def mailbox(self) -> bool:
        return self.transport.capabilities.mailbox


@dataclass(frozen=True, slots=True)
class _Letter:
    """One message and the recipient rows it goes to; its first row names it (key, Message-ID, view link).

    ``personal``: for one recipient, rendered with their values and carrying their unsubscribe link.
    Otherwise one message for all of its rows, To/Cc/Bcc as each row says, rendered for nobody in particular.
    """

    rows: Sequence[PendingRow]
    to: Sequence[str]
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    personal: bool = True

    @classmethod
    def to_one(cls, row: PendingRow) -> _Letter:
        return cls((row,), (row.email_address,))

    @classmethod
    def shared(cls, rows: Sequence[PendingRow]) -> _Letter:
        by_type: dict[str, list[str]] = {"To": [], "CC": [], "BCC": []}
        for row in rows:
            by_type[row.send_type].append(row.email_address)
        return cls(rows, by_type["To"], by_type["CC"], by_type["BCC"], personal=False)

    def unsubscribe_url(self, ctx: SendContext, campaign: CampaignToSend) -> str:
        """The recipient's own unsubscribe link; a shared message, to several people, has none."""
        first = self.rows[0]
        return ctx.links.unsubscribe_url(campaign, first.email_address, first.id) if self.personal else ""

    def template_values(self, ctx: SendContext, campaign: CampaignToSend, who: Identity) -> dict[str, Any]:
        first = self.rows[0]
        return {
            "recipient": first.template_values() if self.personal else {},
            "sender": who.sender,
            "email": ctx.links.email_values(campaign, first.id, personal=self.personal),
            "unsubscribe_url": self.unsubscribe_url(ctx, campaign),
        }


@dataclass(frozen=True, slots=True)
class _Builder:
    """Builds the messages of one chunk: what is the same for all of them is held here, once."""

    ctx: SendContext
    campaign: CampaignToSend
    route: _Route
    parts: Parts
    who: Identity
    own: OwnDomain | None
    # The verified domain's headers (a Sender at the ESP's domain for it), the same on every message.
    own_headers: dict[str, str]
    options: RouteOptions | None
    date: datetime
    # Ask the provider to track opens and clicks (it tracks them itself).
    tracking: bool

    @classmethod
    def for_chunk(
        cls,
        ctx: SendContext,
        campaign: CampaignToSend,
        route: _Route,
        parts: Parts,
        who: Identity,
        own: OwnDomain | None,
        *,
        tracking: bool,
    ) -> _Builder:
        return cls(
            ctx,
            campaign,
            route,
            parts,
            who,
            own,
            own.headers(who.envelope_from) if own is not None else {},
            # Through the ESP, a verified domain may say how to send as it; a mailbox route has its own.
            own.options if own is not None else route.options,
            datetime.now(UTC),
            tracking,
        )

    def __call__(self, letter: _Letter, message: RenderedMessage) -> OutgoingMessage:
        first, who = letter.rows[0], self.who
        if letter.personal:
            headers = self.ctx.links.headers(self.campaign, who, first.email_address, first.id)
        else:
            headers = self.ctx.links.headers(self.campaign, who, None)
        if self.own_headers:
            headers |= self.own_headers
        fields = self.route.transport.capabilities.builds_from_fields
        mime = None
        # A transport that builds messages from fields (Mailgun's batch sending) needs no MIME of mail to
        # one recipient each; a shared message always comes with its MIME (see transports/base.py).
        if not (fields and letter.personal):
            # The attachment parts are the cached, shared ones: a message adds only its own head and text.
            segments = build_segments(
                from_addr=who.from_header,
                to=letter.to,
                cc=letter.cc,
                # A mailbox API reads every recipient from the message itself (and strips Bcc before delivery).
                bcc=letter.bcc if self.route.mailbox else (),
                subject=message.subject,
                text=message.text,
                html=message.html,
                message_id=make_message_id(first.id, who.id_domain),
                date=self.date,
                headers=headers,
                inline=self.parts.inline_parts,
                attachments=self.parts.attached_parts,
            )
            mime = self.own.sign(segments) if self.own is not None else segments
        content = None
        if fields:
            content = MessageContent(
                from_addr=who.from_header,
                subject=message.subject,
                html=message.html,
                text=message.text,
                to=letter.to,
                cc=letter.cc,
                bcc=letter.bcc,
                attachments=self.parts.attached,
                inline=self.parts.inline,
                headers=headers,
            )
        return OutgoingMessage(
            str(first.id),
            who.envelope_from,
            [row.email_address for row in letter.rows],
            mime,
            who.tags,
            content=content,
            tracking=self.tracking,
            options=self.options,
        )


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
        route = campaign.mailbox if ctx.mailboxes.takes(campaign) else ctx.esp.transport.name
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
    parts = await ctx.attachments.parts(campaign.id, campaign.updated_at)
    templates = CampaignTemplates(campaign.subject, campaign.html, campaign.text)
    if ctx.mailboxes.takes(campaign):
        assert campaign.mailbox is not None
        async with ctx.mailboxes.open(campaign) as transport:
            route = _Route(transport, campaign.mailbox, mailbox_options(campaign.mailbox, campaign.headers))
            try:
                return await _send_letters(ctx, campaign, templates, parts, route, [_Letter.shared(rows)])
            except TransientSendError as exc:
                # Throttled or briefly unavailable: that mailbox waits, the campaign does not fail for it.
                raise await ctx.mailboxes.pause(campaign, exc) from exc
    route = _Route(ctx.esp.transport, "esp")
    if campaign.shared:
        return await _send_letters(ctx, campaign, templates, parts, route, [_Letter.shared(rows)])
    chunk = route.transport.capabilities.max_recipients_per_call
    pending = 0
    for start in range(0, len(rows), chunk):
        letters = [_Letter.to_one(row) for row in rows[start : start + chunk]]
        pending += await _send_letters(ctx, campaign, templates, parts, route, letters)
    return pending


async def _send_letters(
    ctx: SendContext,
    campaign: CampaignToSend,
    templates: CampaignTemplates,
    parts: Parts,
    route: _Route,
    letters: Sequence[_Letter],
) -> int:
    """Render, build and send one chunk of letters in one transport call; record what became of each row."""
    who = ctx.esp.identity(campaign, mailbox=route.mailbox)
    own = await ctx.esp.own_domain(who)
    rendered = await ctx.renderer.render(templates, [letter.template_values(ctx, campaign, who) for letter in letters])
    if not route.mailbox:
        # Before tracking: the link rewriter leaves unsubscribe links as they are.
        rendered = [
            with_footer(message, letter.unsubscribe_url(ctx, campaign)) if letter.personal else message
            for letter, message in zip(letters, rendered, strict=True)
        ]
    email_ids = [uuid.uuid4() for _ in letters]
    tracked_by = ctx.links.tracked_by(campaign, route.transport)
    links: list[Sequence[str] | None] = [None] * len(letters)
    if tracked_by == "us":
        rendered, links = ctx.links.track(rendered, email_ids)
    if not route.mailbox:
        await ctx.esp.limiter.acquire(len(letters))
    build = _Builder.for_chunk(ctx, campaign, route, parts, who, own, tracking=tracked_by == "provider")
    results = await route.transport.send_many([build(*each) for each in zip(letters, rendered, strict=True)])
    rows: list[PendingRow] = []
    row_results: list[SendResult] = []
    subjects: list[str] = []
    row_email_ids: list[uuid.UUID] = []
    row_links: list[Sequence[str] | None] = []
    for letter, result, message, email_id, tracked in zip(letters, results, rendered, email_ids, links, strict=True):
        # Every recipient row of a letter shares its one message's outcome.
        rows += letter.rows
        row_results += [result] if len(letter.rows) == 1 else [_for_row(result, row) for row in letter.rows]
        subjects += [message.subject] * len(letter.rows)
        row_email_ids += [email_id] * len(letter.rows)
        row_links += [tracked] * len(letter.rows)
    # A shared message is the chunk's only letter: its To, Cc and Bcc go on its emails row.
    shared = None if letters[0].personal else letters[0]
    return await record(
        ctx.sessionmaker,
        ChunkOutcome(
            campaign=campaign.id,
            rows=rows,
            results=row_results,
            subjects=subjects,
            from_header=who.from_header,
            tags=who.tags,
            headers=_stored_headers(ctx.links.headers(campaign, who, None)),
            domain=None if route.mailbox else (own and own.esp_domain) or ctx.esp.message_domain,
            route=route.name,
            credential=campaign.credential if route.mailbox else None,
            cc=shared.cc if shared else (),
            bcc=shared.bcc if shared else (),
            to=",".join(shared.to) if shared else None,
            email_ids=row_email_ids,
            links=row_links,
        ),
    )


def _for_row(result: SendResult, row: PendingRow) -> SendResult:
    return dataclasses.replace(result, key=str(row.id))


def _stored_headers(sent: dict[str, str]) -> dict[str, str]:
    """What the emails row keeps of a message's headers: those that say where it belongs, not per-recipient links."""
    return {name: value for name, value in sent.items() if name in ("Feedback-ID", "In-Reply-To", "References")}
