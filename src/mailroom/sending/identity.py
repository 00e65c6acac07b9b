"""Who a campaign's mail is from and which headers it carries, on the route it takes.

Through the ESP, mail is From the user's confirmed address (until confirmed, the service's own with the
user's in Reply-To) and carries Feedback-ID and List-Unsubscribe. Through the user's own Gmail or
Outlook, it is From the connected mailbox's address, as the user would send it themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailroom.sending.to_send import CampaignToSend
from mailroom.transports.mime import message_id_domain


@dataclass(frozen=True, slots=True)
class Identity:
    """Worked out once per chunk rather than once per message."""

    sender: dict[str, Any]  # as templates see it
    from_header: str
    envelope_from: str
    id_domain: str  # of Message-IDs
    tags: list[str]  # ESP tags: brand, campaign, the campaign's own
    mailbox: bool  # sent through the user's own mailbox


def from_header(display_name: str | None, address: str) -> str:
    name = (display_name or "").replace('"', "'")
    return f'"{name}" <{address}>' if name else address


def identity(campaign: CampaignToSend, *, mailbox: bool, default_from: str, message_domain: str) -> Identity:
    if mailbox and campaign.mailbox_address:
        address = campaign.mailbox_address
    else:
        # The user's own address once they have confirmed it; until then the service's (see headers()).
        address = campaign.sender.email if campaign.sender.confirmed else default_from
    return Identity(
        sender=campaign.sender.template_values(),
        from_header=from_header(campaign.sender.display_name, address),
        envelope_from=address,
        id_domain=message_id_domain(address, message_domain),
        tags=[str(campaign.brand), str(campaign.id), *campaign.tags],
        mailbox=mailbox,
    )


def reply_headers(campaign: CampaignToSend) -> dict[str, str]:
    """In-Reply-To and References from the campaign's headers.in_reply_to, so replies thread everywhere."""
    answered = campaign.headers.get("in_reply_to")
    if not answered:
        return {}
    message_id = answered if answered.startswith("<") else f"<{answered}>"
    return {"In-Reply-To": message_id, "References": message_id}


def headers(campaign: CampaignToSend, who: Identity, *, unsubscribe: str | None) -> dict[str, str]:
    """The headers of one message; ``unsubscribe`` is its single recipient's unsubscribe link (None for a
    shared message), naming their row so that the unsubscribe counts on this campaign."""
    out = reply_headers(campaign)
    if who.mailbox:
        return out
    out["Feedback-ID"] = f"rechat:{campaign.brand}:rechat"
    if not campaign.sender.confirmed:
        # Replies still reach the user, but nobody can make mail appear to come From an address
        # they have not shown they control.
        out["Reply-To"] = campaign.sender.email
    if unsubscribe is not None:
        out["List-Unsubscribe"] = f"<{unsubscribe}>"
        out["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return out
