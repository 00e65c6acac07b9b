"""View in browser: an archived campaign's email rendered again for one recipient.

The link is mailed with the campaign (``{{email.url}}``); a personal link shows the recipient's own
values, a shared one (for a forwarded mail) shows none of them.
"""

from __future__ import annotations

import html
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.errors import NotFound
from mailroom.sending.to_send import load_recipient
from mailroom.templating.renderer import CampaignTemplates, RenderPool
from mailroom.tracking_links import TrackingTokens, view_url


async def render_view(
    session: AsyncSession, renderer: RenderPool, tokens: TrackingTokens, public_url: str, row_id: uuid.UUID,
    personal: bool,
) -> str:  # fmt: skip
    """The email's html rendered again from its campaign; NotFound unless archived and not deleted."""
    found = await load_recipient(session, row_id)
    if found is None or not found[0].archive or found[0].deleted:
        raise NotFound("no such email", field="token")
    campaign, recipient = found
    context = {
        "recipient": recipient.template_values() if personal else {},
        "sender": campaign.sender.template_values(),
        "email": {"url": view_url(public_url, tokens, recipient.id, personal=personal)},
    }
    (message,) = await renderer.render(CampaignTemplates(campaign.subject, campaign.html, campaign.text), [context])
    if message.html is not None:
        return message.html
    return f"<!doctype html><meta charset=utf-8><pre>{html.escape(message.text)}</pre>"
