"""The service's own mail to its users (address confirmation), sent by the worker.

The API never sends mail: it queues a notice job in the request's transaction, so the notice
exists exactly when the change it is about was committed. The job carries only ids; the worker
makes the link when it sends, so no working token is ever stored in the job table.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crypto import SecretBox
from mailroom.sending.queue import defer_jobs, defer_statement
from mailroom.transports.base import OutgoingMessage, PermanentSendError, Transport, send_one
from mailroom.transports.mime import build_message, sender_message_id

NOTICE_TASK = "mailroom.send_notice"
CONFIRMATION = "email-confirmation"
# Long enough for a weekend away from the inbox, short enough that an old mail is not a standing key.
CONFIRMATION_TTL = 3 * 24 * 3600

DEFER_NOTICE = defer_statement("SELECT CAST(:args AS jsonb)")

USER = text("SELECT id, email, email_confirmed FROM users WHERE id = :id AND deleted_at IS NULL")


async def queue_confirmation(session: AsyncSession, user: uuid.UUID) -> None:
    """Mail the user a link that confirms their address, once this transaction commits."""
    args = json.dumps({"kind": CONFIRMATION, "user": str(user)})
    await defer_jobs(session, DEFER_NOTICE, NOTICE_TASK, args=args)


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
) -> None:
    if kind != CONFIRMATION:
        raise PermanentSendError(f"unknown notice {kind!r}")
    row = (await session.execute(USER, {"id": user})).first()
    if row is None or row.email_confirmed:
        return  # nothing left to confirm
    link = f"{public_url.rstrip('/')}/users/confirm/{confirmation_token(box, row.id, row.email)}"
    body = (
        "Someone, probably an administrator of your brokerage, added this address to mailroom.\n\n"
        "Until you confirm it, email you send goes out from the service's address with yours as Reply-To.\n"
        f"To confirm that this address is yours, open:\n\n{link}\n\n"
        f"The link works for {CONFIRMATION_TTL // 86400} days. If this was not you, ignore this message.\n"
    )
    message = build_message(
        from_addr=sender,
        to=[row.email],
        cc=[],
        subject="Confirm your email address",
        text=body,
        html=None,
        message_id=sender_message_id(uuid.uuid4(), sender, domain),
        date=datetime.now(UTC),
        headers={"Auto-Submitted": "auto-generated"},
        inline=(),
        attachments=(),
    )
    await send_one(transport, OutgoingMessage(f"notice-{row.id}", sender, [row.email], message))
