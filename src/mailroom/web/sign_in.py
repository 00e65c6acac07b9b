"""Passwordless sign-in and the browser sessions it starts.

A sign-in link is a sealed token (crm.notices) naming a ``sign_in_links`` row; consuming it sets the row's
``used_at`` in the one statement that also checks it is unused and unexpired, so of two requests racing
with one link only one signs in. A session id lives only in the browser's cookie: the table keeps its
SHA-256, so a copy of the database signs nobody in.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.notices import SIGN_IN_TTL, queue_sign_in
from mailroom.crm.service import find_user

# A browser left alone this long signs in again; each request it makes moves the deadline on.
IDLE_DAYS = 14
# last_seen_at is worth knowing to the minute; writing it on every page view is not.
TOUCH_EVERY = timedelta(minutes=1)
# Session ids are 43 characters; a longer cookie is not one and is not looked up.
MAX_SESSION_ID_LENGTH = 100

# Live links a user may have at once: enough for a mail that is slow to arrive and a second try, too few for
# anyone to flood an inbox through the sign-in form (which answers the same either way).
MAX_LIVE_LINKS = 3
LIVE_LINKS = text('SELECT count(*) FROM sign_in_links WHERE "user" = :user AND used_at IS NULL AND expires_at > now()')
NEW_LINK = text(
    'INSERT INTO sign_in_links ("user", expires_at) VALUES (:user, now() + make_interval(secs => :ttl)) RETURNING id'
)
# Used once, before it expires, by a user who still exists; the row is marked used in the same statement.
CONSUME_LINK = text(
    """
    UPDATE sign_in_links l SET used_at = now() FROM users u
    WHERE l.id = :id AND l.used_at IS NULL AND l.expires_at > now() AND u.id = l.user AND u.deleted_at IS NULL
    RETURNING l.user
    """
)
NEW_SESSION = text('INSERT INTO web_sessions (id_hash, "user") VALUES (:hash, :user)')
LIVE_SESSION = text(
    """
    SELECT s.user, s.last_seen_at FROM web_sessions s JOIN users u ON u.id = s.user AND u.deleted_at IS NULL
    WHERE s.id_hash = :hash AND s.last_seen_at > now() - make_interval(days => :idle_days)
    """
)
TOUCH_SESSION = text("UPDATE web_sessions SET last_seen_at = now() WHERE id_hash = :hash")
END_SESSION = text("DELETE FROM web_sessions WHERE id_hash = :hash")
USER_SESSIONS = text(
    """
    SELECT id_hash, created_at, last_seen_at FROM web_sessions
    WHERE "user" = :user AND last_seen_at > now() - make_interval(days => :idle_days)
    ORDER BY last_seen_at DESC
    """
)
# Only the user's own: a handle of another user's session ends nothing.
END_OWN_SESSION = text('DELETE FROM web_sessions WHERE id_hash = :hash AND "user" = :user')


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


async def new_link(session: AsyncSession, user: uuid.UUID) -> uuid.UUID:
    """A fresh sign-in link for the user, good for SIGN_IN_TTL; the caller seals or mails it."""
    link: uuid.UUID = (await session.execute(NEW_LINK, {"user": user, "ttl": SIGN_IN_TTL})).scalar_one()
    return link


async def mail_link(session: AsyncSession, email: str) -> None:
    """Mail a sign-in link to the address if a user has it and has fewer than MAX_LIVE_LINKS unused ones, once
    the transaction commits; nothing otherwise (the caller answers the same either way, so nobody learns which
    addresses have accounts)."""
    user = await find_user(session, email)
    if user is None or (await session.execute(LIVE_LINKS, {"user": user.id})).scalar_one() >= MAX_LIVE_LINKS:
        return
    await queue_sign_in(session, user=user.id, link=await new_link(session, user.id))


async def consume_link(session: AsyncSession, link: uuid.UUID) -> uuid.UUID | None:
    """The user the link signs in, marking it used; None when it was used, has expired or never was."""
    user: uuid.UUID | None = (await session.execute(CONSUME_LINK, {"id": link})).scalar_one_or_none()
    return user


async def start_session(session: AsyncSession, user: uuid.UUID) -> str:
    """A new session for the user: its id, for the cookie, and never stored."""
    session_id = secrets.token_urlsafe(32)
    await session.execute(NEW_SESSION, {"hash": session_hash(session_id), "user": user})
    return session_id


async def session_user(session: AsyncSession, session_id: str | None) -> uuid.UUID | None:
    """The live user a session id belongs to (its idle deadline moved on), or None."""
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        return None
    key = session_hash(session_id)
    row = (await session.execute(LIVE_SESSION, {"hash": key, "idle_days": IDLE_DAYS})).first()
    if row is None:
        return None
    if datetime.now(UTC) - row.last_seen_at >= TOUCH_EVERY:
        await session.execute(TOUCH_SESSION, {"hash": key})
    user: uuid.UUID = row.user
    return user


async def end_session(session: AsyncSession, session_id: str) -> None:
    await session.execute(END_SESSION, {"hash": session_hash(session_id)})


async def user_sessions(session: AsyncSession, user: uuid.UUID) -> list[tuple[str, datetime, datetime]]:
    """The user's live sessions, most recently seen first: (handle, started, last seen). A handle is the hex
    of the stored hash, which names a session without being able to sign anyone in."""
    rows = await session.execute(USER_SESSIONS, {"user": user, "idle_days": IDLE_DAYS})
    return [(row.id_hash.hex(), row.created_at, row.last_seen_at) for row in rows]


def session_handle(session_id: str) -> str:
    return session_hash(session_id).hex()


async def end_user_session(session: AsyncSession, user: uuid.UUID, handle: str) -> bool:
    """End one of the user's sessions by its handle; False when the user has no such session."""
    try:
        key = bytes.fromhex(handle)
    except ValueError:
        return False
    ended = await session.execute(END_OWN_SESSION, {"hash": key, "user": user})
    return bool(getattr(ended, "rowcount", 0))
