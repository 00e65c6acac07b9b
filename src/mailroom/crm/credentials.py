"""Users' Google and Microsoft mailbox credentials: what Gmail and Outlook sending acts with.

Provider tokens are encrypted before they reach the database and never leave this module in clear:
a database dump or a log line must not hand out access to someone's mailbox.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.models import GoogleCredential, MicrosoftCredential
from mailroom.crypto import SecretBox
from mailroom.errors import NotFound

Kind = Literal["google", "microsoft"]
Credential = GoogleCredential | MicrosoftCredential
MODELS: dict[Kind, type[GoogleCredential] | type[MicrosoftCredential]] = {
    "google": GoogleCredential,
    "microsoft": MicrosoftCredential,
}


async def create_credential(
    session: AsyncSession,
    box: SecretBox,
    *,
    kind: Kind,
    user: uuid.UUID,
    brand: uuid.UUID,
    email: str,
    scope_summary: list[str],
    access_token: str,
    refresh_token: str | None,
    expires_at: datetime | None,
) -> Credential:
    credential = MODELS[kind](
        user=user,
        brand=brand,
        email=email,
        scope_summary=list(dict.fromkeys(scope_summary)),
        access_token=box.encrypt(access_token),
        refresh_token=box.encrypt(refresh_token),
        expires_at=expires_at,
    )
    session.add(credential)
    await session.flush()
    await session.refresh(credential)
    return credential


async def user_credentials(
    session: AsyncSession, *, user: uuid.UUID, brand: uuid.UUID
) -> list[tuple[Kind, Credential]]:
    """The user's live mailboxes connected for the brand, Google's then Microsoft's, newest first."""
    found: list[tuple[Kind, Credential]] = []
    for kind, model in MODELS.items():
        rows = await session.scalars(
            select(model)
            .where(model.user == user, model.brand == brand, model.deleted_at.is_(None))
            .order_by(model.created_at.desc())
        )
        found += [(kind, cast(Credential, row)) for row in rows]
    return found


async def revoke_credential(
    session: AsyncSession, *, kind: Kind, user: uuid.UUID, credential_id: uuid.UUID
) -> Credential:
    """Marks the caller's credential revoked (as when the provider refuses it); campaigns then refuse it."""
    return await _change_own(session, kind=kind, user=user, credential_id=credential_id, revoked=True)


async def delete_credential(session: AsyncSession, *, kind: Kind, user: uuid.UUID, credential_id: uuid.UUID) -> None:
    await _change_own(session, kind=kind, user=user, credential_id=credential_id, deleted_at=func.now())


async def _change_own(
    session: AsyncSession, *, kind: Kind, user: uuid.UUID, credential_id: uuid.UUID, **values: object
) -> Credential:
    """Changes the caller's live credential; anybody else's answers as missing, never as forbidden."""
    model = MODELS[kind]
    credential: Credential | None = await session.scalar(
        update(model)
        .where(model.id == credential_id, model.user == user, model.deleted_at.is_(None))
        .values(updated_at=func.now(), **values)
        .returning(model)
    )
    if credential is None:
        raise NotFound(f"no such {kind} credential of yours", field="id")
    return credential
