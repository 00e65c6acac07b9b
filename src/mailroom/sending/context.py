"""What every send job of a worker shares, grouped by what the pipeline asks of it.

Built once per worker (``jobs.run_worker``): the service's own route out (``Esp``), the links a message
carries (``Links``), the attachments of the campaigns being sent, the users' mailboxes and the renderer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.crypto import SecretBox
from mailroom.links import unsubscribe_url
from mailroom.mailboxes.access import Mailboxes
from mailroom.sending.attachments import AttachmentCache
from mailroom.sending.domains import OwnDomain, SendingDomains
from mailroom.sending.identity import Identity, headers, identity
from mailroom.sending.ratelimit import RateLimiter
from mailroom.sending.to_send import CampaignToSend
from mailroom.templating.render import RenderedMessage
from mailroom.templating.renderer import RenderPool
from mailroom.tracking_links import LinkRewriter, TrackingTokens, view_url
from mailroom.transports.base import Transport


@dataclass(frozen=True, slots=True)
class Esp:
    """The service's own route out: the configured transport and what mail through it is sent as."""

    transport: Transport
    # The rate every worker shares (MAILROOM_RATE_LIMIT); a user's own mailbox keeps its provider's limits.
    limiter: RateLimiter
    # The domain of Message-IDs when the From's own cannot carry one.
    message_domain: str
    # From for users who have not confirmed their address (their own goes in Reply-To).
    default_from: str = "no-reply@localhost"
    # Users' verified sending domains (their DKIM keys, or the domains set up at the ESP for them).
    domains: SendingDomains | None = None

    def identity(self, campaign: CampaignToSend, *, mailbox: bool) -> Identity:
        return identity(campaign, mailbox=mailbox, default_from=self.default_from, message_domain=self.message_domain)

    async def own_domain(self, who: Identity) -> OwnDomain | None:
        """The From's verified domain, when mail goes out as it (through the ESP, never a mailbox)."""
        if who.mailbox or self.domains is None:
            return None
        return await self.domains.for_address(who.envelope_from)


# More than a chunk's recipients (see Capabilities.max_recipients_per_call): the memo never grows past a chunk.
UNSUBSCRIBE_URLS_KEPT = 4096


class Links:
    """The links a message carries: List-Unsubscribe, its view-in-browser link, tracked links and the pixel."""

    def __init__(self, box: SecretBox, public_url: str, *, tracking: bool = True) -> None:
        self.box = box
        self.public_url = public_url
        # MAILROOM_TRACKING: opens and clicks tracked (per campaign too, see CampaignToSend.tracking).
        self.tracking = tracking
        # Built once per worker: the purpose keys are derived and keyed once, not per message.
        self.tokens = TrackingTokens(box)
        self.rewriter = LinkRewriter(self.tokens, public_url)
        self._unsubscribe_urls: dict[tuple[uuid.UUID, str, uuid.UUID], str] = {}

    def tracked_by(self, campaign: CampaignToSend, transport: Transport) -> Literal["us", "provider"] | None:
        """Who tracks the campaign's opens and clicks on this transport, if anyone."""
        if not (self.tracking and campaign.tracking):
            return None
        return "provider" if transport.capabilities.tracks_itself else "us"

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

    def headers(
        self, campaign: CampaignToSend, who: Identity, address: str | None, recipient: uuid.UUID | None = None
    ) -> dict[str, str]:
        """The headers of one message; ``address`` is its single recipient (None for a shared message)."""
        if address is None or recipient is None:
            return headers(campaign, who, unsubscribe=None)
        return headers(campaign, who, unsubscribe=self.unsubscribe_url(campaign, address, recipient))

    def unsubscribe_url(self, campaign: CampaignToSend, address: str, recipient: uuid.UUID) -> str:
        """One recipient's unsubscribe link, naming their row: the one List-Unsubscribe carries.

        A message asks for it up to three times (its template, its footer, its header): the link is sealed
        once and remembered while its chunk is built.
        """
        key = (campaign.brand, address, recipient)
        url = self._unsubscribe_urls.get(key)
        if url is None:
            if len(self._unsubscribe_urls) >= UNSUBSCRIBE_URLS_KEPT:
                self._unsubscribe_urls.clear()
            url = unsubscribe_url(self.public_url, self.box, campaign.brand, address, recipient)
            self._unsubscribe_urls[key] = url
        return url


@dataclass(frozen=True, slots=True)
class SendContext:
    sessionmaker: async_sessionmaker[AsyncSession]
    # Templates compile and render in its bounded processes, which keep them compiled.
    renderer: RenderPool
    esp: Esp
    # Builds the Gmail or Outlook transport of a campaign's connected mailbox.
    mailboxes: Mailboxes
    links: Links
    attachments: AttachmentCache
