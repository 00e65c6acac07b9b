"""The service's own mail to its users (address confirmation, invitations), sent by the worker.

The API never sends mail: it queues a notice job in the request's transaction, so the notice
exists exactly when the change it is about was committed. The job carries only ids; the worker
makes the link when it sends, so no working token is ever stored in the job table.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.addresses import normalize
from mailroom.crypto import SecretBox
from mailroom.links import SIGN_IN_PREFIX
from mailroom.queue import defer_jobs, defer_statement
from mailroom.transports.base import OutgoingMessage, PermanentSendError, Transport, send_one
from mailroom.transports.mime import build_message, sender_message_id

NOTICE_TASK = "mailroom.send_notice"
CONFIRMATION = "email-confirmation"
# Long enough for a weekend away from the inbox, short enough that an old mail is not a standing key.
CONFIRMATION_TTL = 3 * 24 * 3600
INVITATION = "invitation"
INVITATION_TTL = 7 * 24 * 3600
SIGN_IN = "sign-in"
# A sign-in link is a key to the account: short-lived, and one-use where it is consumed (mailroom.web).
SIGN_IN_TTL = 15 * 60

DEFER_NOTICE = defer_statement("SELECT CAST(:args AS jsonb)")

USER = text("SELECT id, email, email_confirmed FROM users WHERE id = :id AND deleted_at IS NULL")
# Who invites to which brand, read when the mail goes. Whether the inviter is still the brand's Admin (in it
# or through a parent brand) is checked when the invitation is accepted, where that rule lives.
INVITER = text(
    """
    SELECT b.name AS brand_name, coalesce(u.display_name, u.email) AS inviter_name FROM brands b, users u
    WHERE b.id = :brand AND b.deleted_at IS NULL AND u.id = :by AND u.deleted_at IS NULL
    """
)


async def queue_confirmation(session: AsyncSession, user: uuid.UUID) -> None:
    """Mail the user a link that confirms their address, once this transaction commits."""
    args = json.dumps({"kind": CONFIRMATION, "user": str(user)})
    await defer_jobs(session, DEFER_NOTICE, NOTICE_TASK, args=args)


async def queue_invitation(
    session: AsyncSession, *, user: uuid.UUID, brand: uuid.UUID, role: str, inviter: uuid.UUID
) -> None:
    """Mail an existing user an invitation to join ``brand``, once this transaction commits."""
    args = json.dumps({"kind": INVITATION, "user": str(user), "brand": str(brand), "role": role, "by": str(inviter)})
    await defer_jobs(session, DEFER_NOTICE, NOTICE_TASK, args=args)


async def queue_sign_in(session: AsyncSession, *, user: uuid.UUID, link: uuid.UUID) -> None:
    """Mail the user the sign-in link ``link`` names, once this transaction commits."""
    args = json.dumps({"kind": SIGN_IN, "user": str(user), "link": str(link)})
    await defer_jobs(session, DEFER_NOTICE, NOTICE_TASK, args=args)


def sign_in_url(box: SecretBox, public_url: str, link: uuid.UUID) -> str:
    """The address of a sign-in link: a sealed token naming the link's row, which says whether it was used."""
    return public_url.rstrip("/") + SIGN_IN_PREFIX + box.seal(SIGN_IN, {"link": str(link)}, ttl=SIGN_IN_TTL)


def read_sign_in(box: SecretBox, token: str) -> uuid.UUID:
    """The sign-in link a token names; InvalidToken (or ValueError) otherwise."""
    return uuid.UUID(str(box.unseal(SIGN_IN, token)["link"]))


def invitation_token(box: SecretBox, *, brand: uuid.UUID, email: str, role: str, inviter: uuid.UUID) -> str:
    """A sealed invitation; only the invited address's own account can accept it."""
    payload = {"brand": str(brand), "email": normalize(email), "role": role, "by": str(inviter)}
    return box.seal(INVITATION, payload, ttl=INVITATION_TTL)


def confirmation_token(box: SecretBox, user: uuid.UUID | str, email: str) -> str:
    # The address is sealed in: a link mailed to an old address cannot confirm a new one.
    return box.seal(CONFIRMATION, {"user": str(user), "email": email.strip().lower()}, ttl=CONFIRMATION_TTL)


def read_confirmation(box: SecretBox, token: str) -> tuple[uuid.UUID, str]:
    """The user and address a confirmation token names; InvalidToken (or ValueError) otherwise."""
    payload = box.unseal(CONFIRMATION, token)
    return uuid.UUID(str(payload["user"])), str(payload["email"])


async def send_notice(
    session: AsyncSession,
    transport: Transport,
    box: SecretBox,
    *,
    kind: str,
    user: uuid.UUID,
    public_url: str,
    sender: str,
    domain: str,
    brand: uuid.UUID | None = None,
    role: str | None = None,
    by: uuid.UUID | None = None,
    link: uuid.UUID | None = None,
) -> None:
    row = (await session.execute(USER, {"id": user})).first()
    if row is None:
        return
    base = public_url.rstrip("/")
    if kind == CONFIRMATION:
        if row.email_confirmed:
            return  # nothing left to confirm
        subject, body = "Confirm your email address", _confirmation_body(box, row, base)
    elif kind == INVITATION and brand is not None and role is not None and by is not None:
        found = (await session.execute(INVITER, {"brand": brand, "by": by})).first()
        if found is None:
            return
        token = invitation_token(box, brand=brand, email=row.email, role=role, inviter=by)
        subject = f"You are invited to {found.brand_name} on mailroom"
        body = _invitation_body(found.inviter_name, found.brand_name, role, f"{base}/invitations/{token}/accept")
    elif kind == SIGN_IN and link is not None:
        subject, body = "Sign in to mailroom", _sign_in_body(sign_in_url(box, base, link))
    else:
        raise PermanentSendError(f"unknown notice {kind!r}")
    message = build_message(
        from_addr=sender,
        to=[row.email],
        cc=[],
        subject=subject,
        text=body,
        html=None,
        message_id=sender_message_id(uuid.uuid4(), sender, domain),
        date=datetime.now(UTC),
        headers={"Auto-Submitted": "auto-generated"},
        inline=(),
        attachments=(),
    )
    await send_one(transport, OutgoingMessage(f"notice-{kind}-{row.id}", sender, [row.email], message))


def _confirmation_body(box: SecretBox, row: Row[Any], base: str) -> str:
    link = f"{base}/users/confirm/{confirmation_token(box, row.id, row.email)}"
    return (
        "Someone, probably an administrator of your brokerage, added this address to mailroom.\n\n"
        "Until you confirm it, email you send goes out from the service's address with yours as Reply-To.\n"
        f"To confirm that this address is yours, open:\n\n{link}\n\n"
        f"The link works for {CONFIRMATION_TTL // 86400} days. If this was not you, ignore this message.\n"
    )


def _invitation_body(inviter: str, brand: str, role: str, accept_url: str) -> str:
    # Accepting takes the invited user's own API token, so a forwarded mail lets nobody else join.
    return (
        f"{inviter} invited you to join {brand} on mailroom as {'an' if role[0] in 'AEIOU' else 'a'} {role}.\n\n"
        "To join, accept the invitation with your own API token:\n\n"
        f"curl -X POST '{accept_url}' -H 'Authorization: Bearer <your token>'\n\n"
        f"The invitation works for {INVITATION_TTL // 86400} days. If you did not expect it, ignore this message.\n"
    )


def _sign_in_body(url: str) -> str:
    return (
        "Someone, probably you, asked to sign in to mailroom with this address.\n\n"
        f"To sign in, open:\n\n{url}\n\n"
        f"The link works once, for {SIGN_IN_TTL // 60} minutes. If this was not you, ignore this message: "
        "nobody can sign in without it.\n"
    )
