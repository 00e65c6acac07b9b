"""Mailbox actions (mark read or unread, trash, archive) run by the worker on a user's Gmail or Outlook.

The API checks the request and queues one job in its transaction; the job acts through the
credential's stored tokens. Between the request and the job the user may have disconnected the
mailbox (or the provider revoked the access): the job then does nothing and says why in the log.
A provider that throttles or fails for a while raises TransientSendError, and the job runs again
(no sooner than its Retry-After); a refusal (PermanentSendError) is logged and not retried.
Applying an action twice changes nothing, so a retry after a partial run is harmless.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Final, Literal, get_args

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.mailboxes.access import TABLES, Mailboxes, MailboxKind
from mailroom.queue import defer_jobs, defer_statement
from mailroom.transports.base import PermanentSendError
from mailroom.transports.gmail import GmailTransport

log = logging.getLogger(__name__)

MAILBOX_ACTION_TASK: Final = "mailroom.mailbox_action"
MailboxAction = Literal["read", "unread", "trash", "archive"]
MAILBOX_ACTIONS: Final[tuple[str, ...]] = get_args(MailboxAction)
# Outlook's well-known folder each moving action puts the messages in.
OUTLOOK_FOLDERS: Final[dict[str, str]] = {"trash": "deleteditems", "archive": "archive"}
NAMES: Final[dict[MailboxKind, str]] = {"google": "Gmail", "microsoft": "Outlook"}

_DEFER = defer_statement("SELECT CAST(:args AS jsonb)")


async def queue_mailbox_action(
    session: AsyncSession,
    *,
    kind: MailboxKind,
    credential: uuid.UUID,
    action: MailboxAction,
    message_ids: Sequence[str],
) -> None:
    """Queue the action in the session's transaction: the job exists only if the transaction commits."""
    args = {"kind": kind, "credential": str(credential), "action": action, "message_ids": list(message_ids)}
    await defer_jobs(session, _DEFER, MAILBOX_ACTION_TASK, args=json.dumps(args))


async def run_mailbox_action(
    mailboxes: Mailboxes,
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    kind: str,
    credential: uuid.UUID,
    action: str,
    message_ids: Sequence[str],
) -> None:
    """Apply the action to the messages of the credential's mailbox.

    Raises TransientSendError when the provider asks to come back later; every other outcome ends
    the job: done, the mailbox disconnected meanwhile, or refused by the provider (logged).
    """
    if kind not in NAMES or action not in MAILBOX_ACTIONS:
        log.error("mailbox action %r on a %r mailbox is not one this service knows; skipped", action, kind)
        return
    mailbox: MailboxKind = "google" if kind == "google" else "microsoft"
    why = await _not_live(sessionmaker, mailbox, credential)
    if why is not None:
        log.warning(
            "%s action %s on %d messages skipped: the %s account %s is %s",
            NAMES[mailbox], action, len(message_ids), NAMES[mailbox], credential, why,
        )  # fmt: skip
        return
    try:
        async with mailboxes.gmail_or_outlook(mailbox, credential) as transport:
            if isinstance(transport, GmailTransport):
                await transport.apply_action(action, message_ids)
            elif action in OUTLOOK_FOLDERS:
                await transport.move(message_ids, destination=OUTLOOK_FOLDERS[action])
            else:
                await transport.mark_read(message_ids, read=action == "read")
    except PermanentSendError as exc:
        # Retrying cannot help (a revoked access, a missing permission): the reason is what the user needs.
        log.warning(
            "%s action %s on %d messages of credential %s refused: %s",
            NAMES[mailbox], action, len(message_ids), credential, exc.reason,
        )  # fmt: skip
        return
    log.info("%s action %s done on %d messages of credential %s", NAMES[mailbox], action, len(message_ids), credential)


async def _not_live(
    sessionmaker: async_sessionmaker[AsyncSession], kind: MailboxKind, credential: uuid.UUID
) -> str | None:
    """Why the credential cannot be acted with any more (missing, deleted, revoked); None when it can."""
    async with sessionmaker() as session:
        row = (
            await session.execute(
                text(f"SELECT revoked, deleted_at IS NOT NULL AS deleted FROM {TABLES[kind]} WHERE id = :id"),
                {"id": credential},
            )
        ).one_or_none()
    if row is None:
        return "gone"
    if row.deleted:
        return "deleted"
    if row.revoked:
        return "revoked"
    return None
