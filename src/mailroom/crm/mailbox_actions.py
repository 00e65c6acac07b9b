"""Actions on the messages of a user's connected mailbox: mark read or unread, trash, archive.

A request is checked here and queued as one worker job in the caller's transaction; nothing is
sent to Gmail or Outlook while the request is open. The checks run in a fixed order, so a client
learns the most basic problem first: the credential (the caller's own, else it does not exist),
its state (connected), its permissions (mail.send and mail.modify, as the API document asks), then the body.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Final, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.credentials import MODELS, Credential, Kind
from mailroom.errors import BadRequest, Forbidden, NotFound
from mailroom.mailboxes.jobs import NAMES, MailboxAction, queue_mailbox_action
from mailroom.validation import NOT_BLANK

# What the API document asks of a credential whose messages are acted on.
ACTION_SCOPES: Final = ("mail.send", "mail.modify")
# Gmail takes 1,000 ids per call and Outlook 20: 10,000 is a day's cleanup in one request, in one job.
MAX_MESSAGE_IDS: Final = 10_000
# Gmail ids are 16 hex digits and Graph's immutable ids about 150 characters; this only bounds abuse.
MAX_MESSAGE_ID: Final = 1_000
# Graph's ids are base64 (either alphabet) and go into a request path: nothing else may reach it, so an
# id can never climb out of /me/messages/ ("..") nor add a query ("?").
_OUTLOOK_CHARACTERS = r"[A-Za-z0-9+/_=-]"
OUTLOOK_ID = re.compile(f"{_OUTLOOK_CHARACTERS}+")
# The ids _message_ids takes, as the API document states them: a Gmail id holds no NUL and more than blanks.
MESSAGE_ID_PATTERNS: Final[dict[Kind, str]] = {
    "google": NOT_BLANK,
    "microsoft": f"^{_OUTLOOK_CHARACTERS}+$",
}


async def mark_read(
    session: AsyncSession,
    *,
    kind: Kind,
    user: uuid.UUID,
    credential_id: str,
    body: object,
    message_id: str | None = None,
) -> None:
    """Queue marking messages read (``status`` true) or unread (false).

    ``message_id`` given (the one-message route): that message; else the body's ``messageIds``.
    """
    credential = await usable_credential(session, kind=kind, user=user, credential_id=credential_id)
    fields = _object(body)
    if message_id is not None:
        ids = _message_ids(kind, [message_id], "messageId")
    else:
        ids = _message_ids(kind, fields.get("messageIds"))
    read = fields.get("status")
    if not isinstance(read, bool):
        raise BadRequest("must be true (read) or false (unread)", field="status")
    await _queue(session, kind, credential, "read" if read else "unread", ids)


async def move(
    session: AsyncSession,
    *,
    kind: Kind,
    user: uuid.UUID,
    credential_id: str,
    body: object,
    action: MailboxAction,
) -> None:
    """Queue moving the body's ``messageIds`` to the trash or out of the inbox (``action``)."""
    if action not in ("trash", "archive"):
        raise ValueError(f"not a moving action: {action!r}")
    credential = await usable_credential(session, kind=kind, user=user, credential_id=credential_id)
    ids = _message_ids(kind, _object(body).get("messageIds"))
    await _queue(session, kind, credential, action, ids)


async def usable_credential(session: AsyncSession, *, kind: Kind, user: uuid.UUID, credential_id: str) -> Credential:
    """The caller's credential if it is connected and may change messages; else the error saying why."""
    label = NAMES[kind]
    try:
        wanted = uuid.UUID(credential_id)
    except ValueError:
        wanted = None
    model = MODELS[kind]
    credential = None
    if wanted is not None:
        # Another user's credential answers exactly as a missing one: ids of others' mailboxes stay secret.
        found = await session.scalar(select(model).where(model.id == wanted, model.user == user))
        credential = cast(Credential | None, found)
    if credential is None:
        raise NotFound(f"no such {label} account of yours", field="credentialId")
    if credential.deleted_at is not None:
        raise BadRequest(f"this {label} account is disconnected: deleted", field="credentialId")
    if credential.revoked:
        raise BadRequest(f"this {label} account is disconnected: revoked", field="credentialId")
    missing = [scope for scope in ACTION_SCOPES if scope not in (credential.scope_summary or [])]
    if missing:
        raise Forbidden(
            f"this {label} account did not grant {' and '.join(missing)}: connect it again allowing "
            f"{' and '.join(ACTION_SCOPES)}",
            field="credentialId",
        )
    return credential


def _object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("must be a JSON object", field="body")
    return cast(Mapping[str, Any], body)


def _message_ids(kind: Kind, value: object, field: str = "messageIds") -> list[str]:
    if value is None:
        raise BadRequest("is required: a list of message ids", field=field)
    if not isinstance(value, list):
        raise BadRequest("must be a list of message ids", field=field)
    if not value:
        raise BadRequest("must name at least one message", field=field)
    if len(value) > MAX_MESSAGE_IDS:
        raise BadRequest(f"at most {MAX_MESSAGE_IDS} ids per request, not {len(value)}", field=field)
    for i, item in enumerate(value):
        where = f"{field}[{i}]" if field == "messageIds" else field
        if not isinstance(item, str) or not item.strip():
            raise BadRequest("must be a non-empty string", field=where)
        if len(item) > MAX_MESSAGE_ID:
            raise BadRequest(f"must be at most {MAX_MESSAGE_ID} characters", field=where)
        if "\x00" in item:
            # PostgreSQL's jsonb cannot hold NUL: refused here rather than failing as a 500.
            raise BadRequest("must not contain NUL characters", field=where)
        try:
            item.encode()
        except UnicodeEncodeError:
            raise BadRequest("must be valid Unicode text", field=where) from None
        if kind == "microsoft" and not OUTLOOK_ID.fullmatch(item):
            raise BadRequest("is not an Outlook message id (letters, digits and + / - _ =)", field=where)
    # The same message named twice is acted on once.
    return list(dict.fromkeys(cast(list[str], value)))


async def _queue(
    session: AsyncSession, kind: Kind, credential: Credential, action: MailboxAction, ids: list[str]
) -> None:
    await queue_mailbox_action(session, kind=kind, credential=credential.id, action=action, message_ids=ids)
