"""Access tokens of a stored Gmail or Outlook credential, refreshed when they expire.

Several workers may send through one mailbox at once. A refresh happens under ``SELECT ... FOR
UPDATE`` on the credential row and re-reads the row first: a worker that waited for the lock finds
the token another one just stored and uses it, so the provider sees one refresh, not one per sender
(Microsoft rotates refresh tokens: refreshing twice with the same one may be refused).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.crypto import SecretBox
from mailroom.transports.base import PermanentSendError
from mailroom.transports.oauth import InvalidGrant, OAuthClient, OAuthError

Kind = Literal["google", "microsoft"]
# A token this close to its expiry is refreshed first: a send takes a while, and clocks differ.
EARLY = timedelta(seconds=60)
TABLES: dict[Kind, str] = {"google": "google_credentials", "microsoft": "microsoft_credentials"}
NAMES: dict[Kind, tuple[str, str]] = {"google": ("Google", "Gmail"), "microsoft": ("Microsoft", "Outlook")}

_COLUMNS = "email, revoked, deleted_at, access_token, refresh_token, expires_at"


@dataclass(frozen=True)
class _Statements:
    select: TextClause
    lock: TextClause
    store: TextClause
    revoke: TextClause


def _statements(table: str) -> _Statements:
    # ``table`` is one of TABLES' values, never input.
    return _Statements(
        select=text(f"SELECT {_COLUMNS} FROM {table} WHERE id = :id"),
        lock=text(f"SELECT {_COLUMNS} FROM {table} WHERE id = :id FOR UPDATE"),
        # A refresh answer without a refresh token (Google's) keeps the one stored.
        store=text(
            f"UPDATE {table} SET access_token = :access, refresh_token = coalesce(:refresh, refresh_token), "
            "expires_at = :expires_at, updated_at = now() WHERE id = :id"
        ),
        revoke=text(f"UPDATE {table} SET revoked = true, updated_at = now() WHERE id = :id"),
    )


_SQL = {kind: _statements(table) for kind, table in TABLES.items()}


@dataclass(frozen=True)
class _Row:
    email: str
    revoked: bool
    deleted: bool
    access_token: str | None
    refresh_token: str | None
    expires_at: datetime | None


class StoredTokens:
    """A ``transports.base.TokenSource`` for one credential row.

    The last token is kept for the object's life, so a chunk of sends reads the row once.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        oauth: OAuthClient,
        http: httpx.AsyncClient,
        *,
        kind: Kind,
        credential_id: uuid.UUID,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._box = box
        self._oauth = oauth
        self._http = http
        self.kind = kind
        self.credential_id = credential_id
        self._sql = _SQL[kind]
        self._token: str | None = None
        self._expires_at: datetime | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # never show the token
        return f"StoredTokens({self.kind!r}, {self.credential_id})"

    async def access_token(self, *, refresh: bool = False) -> str:
        async with self._lock:
            if not refresh and self._token is not None and _fresh(self._expires_at):
                return self._token
            # refresh=True: the provider refused the token last handed out; one stored since is new.
            refused = self._token if refresh else None
            async with self._sessionmaker() as session:
                found = (await session.execute(self._sql.select, {"id": self.credential_id})).one_or_none()
            row = self._check(self._decrypt(found))
            if not _needs_refresh(row, refused):
                return self._keep(row.access_token or "", row.expires_at)
            return await self._refresh(refused)

    async def _refresh(self, refused: str | None) -> str:
        revoked_email = ""
        async with self._sessionmaker() as session, session.begin():
            found = (await session.execute(self._sql.lock, {"id": self.credential_id})).one_or_none()
            row = self._check(self._decrypt(found))
            if not _needs_refresh(row, refused):  # another sender refreshed while we waited for the lock
                return self._keep(row.access_token or "", row.expires_at)
            if row.refresh_token is None:
                raise PermanentSendError(self._reconnect(row.email))
            try:
                grant = await self._oauth.refresh(row.refresh_token, client=self._http)
            except InvalidGrant:
                await session.execute(self._sql.revoke, {"id": self.credential_id})
                revoked_email = row.email
            except OAuthError as exc:
                provider = NAMES[self.kind][0]
                raise PermanentSendError(
                    f"{provider} refused to refresh the access to {row.email} ({exc.error}): "
                    "check the server's OAuth client settings"
                ) from None
            else:
                await session.execute(
                    self._sql.store,
                    {
                        "id": self.credential_id,
                        "access": self._box.encrypt(grant.access_token),
                        "refresh": self._box.encrypt(grant.refresh_token),
                        "expires_at": grant.expires_at,
                    },
                )
                return self._keep(grant.access_token, grant.expires_at)
        # Raised once the revocation is committed, so campaigns refuse the credential from now on.
        raise PermanentSendError(self._reconnect(revoked_email))

    def _keep(self, token: str, expires_at: datetime | None) -> str:
        self._token, self._expires_at = token, expires_at
        return token

    def _decrypt(self, found: Any) -> _Row | None:
        if found is None:
            return None
        return _Row(
            email=found.email,
            revoked=found.revoked,
            deleted=found.deleted_at is not None,
            access_token=self._box.decrypt(None if found.access_token is None else bytes(found.access_token)),
            refresh_token=self._box.decrypt(None if found.refresh_token is None else bytes(found.refresh_token)),
            expires_at=found.expires_at,
        )

    def _check(self, row: _Row | None) -> _Row:
        mailbox = NAMES[self.kind][1]
        if row is None or row.deleted:
            self._token = None
            raise PermanentSendError(f"the {mailbox} account this campaign sends through was disconnected")
        if row.revoked:
            self._token = None
            raise PermanentSendError(f"the access to {row.email} is revoked: reconnect your {mailbox} account")
        return row

    def _reconnect(self, email: str) -> str:
        provider, mailbox = NAMES[self.kind]
        return f"{provider} no longer accepts mailroom's access to {email}: reconnect your {mailbox} account"


def _fresh(expires_at: datetime | None) -> bool:
    # No expiry on record: use the token; a 401 from the provider asks for a refresh.
    return expires_at is None or expires_at - datetime.now(UTC) > EARLY


def _needs_refresh(row: _Row, refused: str | None) -> bool:
    if row.access_token is None or not _fresh(row.expires_at):
        return True
    return refused is not None and row.access_token == refused
