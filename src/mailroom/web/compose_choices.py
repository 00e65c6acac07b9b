"""What the compose form offers to choose from: the brand's own tags, lists and contacts, the senders the
user may pick, and the user's connected mailboxes. Reads only; the campaigns service checks every choice
again when the campaign is saved, so a value edited in the browser is refused there, not trusted here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.crm.membership import member_role

# Enough to pick from on one page; a brand with more finds them by search.
TAG_LIMIT = 200
LIST_LIMIT = 200
CONTACT_MATCHES = 25

TAGS = text(
    """
    SELECT DISTINCT t FROM contacts c CROSS JOIN LATERAL unnest(c.tags) AS t
    WHERE c.brand = :brand AND c.deleted_at IS NULL AND lower(t) <> 'unsubscribed'
    ORDER BY t LIMIT :limit
    """
)
LISTS = text(
    "SELECT id, name FROM crm_lists WHERE brand = :brand AND deleted_at IS NULL ORDER BY name, id LIMIT :limit"
)
# Contacts matched by name or address (letters searched for as typed: % and _ are not wildcards), and those
# already ticked, so that a new search keeps them on the form.
CONTACTS = text(
    """
    SELECT id, first_name, last_name, emails[1] AS email FROM contacts
    WHERE brand = :brand AND deleted_at IS NULL AND emails[1] IS NOT NULL AND (
        id = ANY(CAST(:ticked AS uuid[]))
        OR (:search <> '' AND (
            strpos(lower(concat_ws(' ', first_name, last_name)), lower(:search)) > 0
            OR strpos(lower(array_to_string(emails, ' ')), lower(:search)) > 0)))
    ORDER BY id = ANY(CAST(:ticked AS uuid[])) DESC, last_name NULLS LAST, first_name NULLS LAST, id
    LIMIT :limit
    """
)
MEMBERS = text(
    """
    SELECT u.id, u.email, u.display_name, u.first_name, u.last_name FROM brand_members m
    JOIN users u ON u.id = m.user AND u.deleted_at IS NULL
    WHERE m.brand = :brand ORDER BY lower(u.email)
    """
)
ME = text("SELECT id, email, display_name, first_name, last_name FROM users WHERE id = :user")
MAILBOXES = text(
    """
    SELECT 'google' AS kind, id, email FROM google_credentials
    WHERE "user" = :user AND brand = :brand AND deleted_at IS NULL AND NOT revoked
    UNION ALL
    SELECT 'microsoft', id, email FROM microsoft_credentials
    WHERE "user" = :user AND brand = :brand AND deleted_at IS NULL AND NOT revoked
    ORDER BY 1, 3
    """
)


@dataclass(frozen=True, slots=True)
class Choices:
    tags: list[str]
    lists: list[tuple[str, str]]
    contacts: list[dict[str, str]]
    # (user id, label): only the user, unless they are an Admin of the brand.
    senders: list[tuple[str, str]]
    mailboxes: list[tuple[str, str]]


def _person(row: Any) -> str:
    name = row.display_name or " ".join(p for p in (row.first_name, row.last_name) if p)
    return f"{name} <{row.email}>" if name else str(row.email)


def _ids(values: list[str]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue  # not an id: the service names it when the form is saved
    return ids


async def choices(
    session: AsyncSession, brand: uuid.UUID, user: uuid.UUID, *, search: str, ticked: list[str]
) -> Choices:
    params = {"brand": brand, "user": user}
    tags = [row[0] for row in await session.execute(TAGS, {**params, "limit": TAG_LIMIT})]
    lists = [(str(r.id), r.name) for r in await session.execute(LISTS, {**params, "limit": LIST_LIMIT})]
    found = await session.execute(
        CONTACTS, {**params, "search": search.strip(), "ticked": _ids(ticked), "limit": CONTACT_MATCHES}
    )
    contacts = [
        {"id": str(r.id), "name": " ".join(p for p in (r.first_name, r.last_name) if p), "email": r.email}
        for r in found
    ]
    if await member_role(session, user, brand) == "Admin":
        senders = [(str(r.id), _person(r)) for r in await session.execute(MEMBERS, params)]
    else:
        senders = []
    if not any(sender == str(user) for sender, _ in senders):
        senders.insert(0, (str(user), _person((await session.execute(ME, params)).one())))
    mailboxes = [
        (f"{r.kind}:{r.id}", f"{'Gmail' if r.kind == 'google' else 'Outlook'}: {r.email}")
        for r in await session.execute(MAILBOXES, params)
    ]
    return Choices(tags, lists, contacts, senders, mailboxes)


async def contact_options(session: AsyncSession, brand: uuid.UUID, ids: list[str]) -> list[dict[str, str]]:
    """The contacts a preview may be rendered for: those named, of this brand, with an address."""
    found = await session.execute(
        CONTACTS, {"brand": brand, "search": "", "ticked": _ids(ids), "limit": CONTACT_MATCHES}
    )
    return [
        {"id": str(r.id), "name": " ".join(p for p in (r.first_name, r.last_name) if p), "email": r.email}
        for r in found
    ]
