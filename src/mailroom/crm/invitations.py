"""Invitations: how an existing user joins another brand, and how a user confirms their address.

An invitation is a sealed token naming the brand, the invited address, the role and the Admin who
invited; nothing is stored. It is accepted by the invited user themselves, with their own API
token, so an Admin can never pull somebody else's account into their brand (and then send as it).
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.addresses import normalize
from mailroom.crm.membership import is_direct_member, member_role, required
from mailroom.crm.models import Person
from mailroom.crm.notices import INVITATION, INVITATION_TTL, invitation_token, read_confirmation
from mailroom.crm.schemas import InvitationOut, MembershipOut, Role
from mailroom.crm.service import set_membership
from mailroom.crypto import InvalidToken, SecretBox
from mailroom.errors import Forbidden, NotFound


def invite(box: SecretBox, *, brand: uuid.UUID, email: str, role: Role, inviter: uuid.UUID) -> InvitationOut:
    """A new invitation; the caller (an Admin of the brand) hands the token to the invited person."""
    return {
        "type": "invitation",
        "token": invitation_token(box, brand=brand, email=email, role=role, inviter=inviter),
        "brand": brand,
        "email": normalize(email),
        "role": role,
        "expires_at": int(time.time()) + INVITATION_TTL,
    }


async def accept(session: AsyncSession, box: SecretBox, token: str, user: Person) -> MembershipOut:
    """Make ``user`` a member as the invitation says; a member already keeps the role they have."""
    try:
        payload = box.unseal(INVITATION, token)
        brand, inviter = uuid.UUID(payload["brand"]), uuid.UUID(payload["by"])
        email, role = str(payload["email"]), str(payload["role"])
    except (InvalidToken, KeyError, ValueError):
        raise NotFound("no such invitation, or it has expired", field="token") from None
    if normalize(user.email) != email:
        raise Forbidden("this invitation is for another address", field="token")
    # An Admin who has since lost the role (or a brand deleted since) no longer vouches for it.
    if await member_role(session, inviter, brand) != "Admin":
        raise NotFound("no such invitation, or it has expired", field="token")
    if not await is_direct_member(session, user.id, brand):
        await set_membership(session, brand=brand, user=user.id, role=role)
    return {
        "type": "brand_membership",
        "brand": brand,
        "user": user.id,
        # A direct member now, so the role is theirs in this very brand.
        "role": required(await member_role(session, user.id, brand), field="token"),
    }


CONFIRM = text(
    """
    UPDATE users SET email_confirmed = true, updated_at = now()
    WHERE id = :user AND lower(email) = :email AND deleted_at IS NULL
    RETURNING id
    """
)


def _confirmation(box: SecretBox, token: str) -> tuple[uuid.UUID, str]:
    try:
        return read_confirmation(box, token)
    except (InvalidToken, KeyError, ValueError):
        raise NotFound("no such confirmation link, or it has expired", field="token") from None


def is_confirmation(box: SecretBox, token: str) -> bool:
    try:
        _confirmation(box, token)
    except NotFound:
        return False
    return True


async def confirm_address(session: AsyncSession, box: SecretBox, token: str) -> None:
    """Mark the address the token was mailed to as confirmed; 404 for a forged, expired or stale link."""
    user, email = _confirmation(box, token)
    if (await session.execute(CONFIRM, {"user": user, "email": email})).first() is None:
        raise NotFound("no such confirmation link, or it has expired", field="token")
