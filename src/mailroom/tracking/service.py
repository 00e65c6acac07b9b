"""Suppressing an address through its unsubscribe link: the brand never mails it again, until undone.

The link's own unsubscribe suppresses the address and tags the brand's contacts holding it when the
request is answered, and appends an `unsubscribed` event that the settler counts on the campaign and its
recipient row (once per recipient) when the link names the row. The settler does not suppress for these
events again: the request did it, and the person may have undone it since.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.addresses import normalize
from mailroom.tracking.events import NewEvent, append_events
from mailroom.tracking.settle import UNSUBSCRIBE_LINK

# The contacts an unsubscribe tags that its undo takes the tag off again, at most: an address is held by
# a few contacts of a brand, and the undo token carries their ids.
MAX_TAGGED = 50

_SUPPRESS = text(
    "INSERT INTO suppressions (brand, email, reason) VALUES (:brand, :email, 'unsubscribed') "
    "ON CONFLICT (brand, email) DO NOTHING RETURNING created_at"
)
_TAG = text(
    """
    UPDATE contacts SET tags = array_append(tags, 'Unsubscribed'), updated_at = now()
    WHERE brand = :brand AND deleted_at IS NULL AND mailroom_lower_array(emails) @> ARRAY[:email]
      AND NOT mailroom_lower_array(tags) @> ARRAY['unsubscribed']
    RETURNING id
    """
)
# The recipient row the link names, when it is this brand's and this address's.
_RECIPIENT = text(
    """
    SELECT ce.campaign, ce.email FROM email_campaign_emails ce JOIN email_campaigns c ON c.id = ce.campaign
    WHERE ce.id = :id AND c.brand = :brand AND lower(btrim(ce.email_address)) = :email
    """
)
_LIFT = text(
    "DELETE FROM suppressions WHERE brand = :brand AND email = :email AND reason = 'unsubscribed' "
    "AND created_at = :created RETURNING 1"
)
_UNTAG = text(
    """
    UPDATE contacts SET tags = array_remove(tags, 'Unsubscribed'), updated_at = now()
    WHERE id = ANY(CAST(:ids AS uuid[])) AND brand = :brand
    """
)
_BRAND_NAME = text("SELECT name FROM brands WHERE id = :id")


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """What an unsubscribe changed: None when the address was suppressed already (nothing to undo)."""

    suppressed_at: datetime | None
    tagged: list[uuid.UUID]


async def unsubscribe(
    session: AsyncSession, brand: uuid.UUID, address: str, recipient: uuid.UUID | None
) -> Unsubscribed:
    email = normalize(address)
    created = (await session.execute(_SUPPRESS, {"brand": brand, "email": email})).scalar_one_or_none()
    tagged = list((await session.execute(_TAG, {"brand": brand, "email": email})).scalars())
    row = None
    if recipient is not None:
        row = (await session.execute(_RECIPIENT, {"id": recipient, "brand": brand, "email": email})).first()
    event = NewEvent(
        type="unsubscribed",
        source=UNSUBSCRIBE_LINK,
        brand=brand,
        recipient=email,
        campaign=row.campaign if row else None,
        email=row.email if row else None,
        campaign_email=recipient if row else None,
    )
    await append_events(session, [event])
    return Unsubscribed(created, tagged[:MAX_TAGGED])


async def undo_unsubscribe(
    session: AsyncSession, brand: uuid.UUID, address: str, suppressed_at: datetime, tagged: list[uuid.UUID]
) -> bool:
    """Lift the suppression that unsubscribe made (never an earlier one, or a bounce's), and its tags."""
    lifted = await session.execute(_LIFT, {"brand": brand, "email": normalize(address), "created": suppressed_at})
    if lifted.first() is None:
        return False
    await session.execute(_UNTAG, {"ids": [str(t) for t in tagged], "brand": brand})
    return True


async def brand_name(session: AsyncSession, brand: uuid.UUID) -> str | None:
    name: str | None = (await session.execute(_BRAND_NAME, {"id": brand})).scalar_one_or_none()
    return name
