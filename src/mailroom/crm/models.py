"""Brands, their people, their contacts and lists, MLS agents, users' mailbox credentials, and the addresses a
brand must not mail again (suppressions: who may be mailed is decided with the recipients themselves)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, Protocol, get_args

from sqlalchemy import CheckConstraint, DateTime, Index, LargeBinary, PrimaryKeyConstraint, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from mailroom.orm import Base, created_at, fk, one_of, timestamp, uuid_pk

ROLES = ("Admin", "Agent")


class Brand(Base):
    __tablename__ = "brands"
    id: Mapped[uuid.UUID] = uuid_pk()
    parent: Mapped[uuid.UUID | None] = fk("brands.id", nullable=True)
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    deleted_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (Index("ix_brands_parent", "parent"),)


class Person(Protocol):
    """A user as the rules about their address need them: a stored User, or a request's caller."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def email(self) -> str: ...
    @property
    def email_confirmed(self) -> bool: ...


# Individual emails a user may send in a calendar month unless set otherwise.
DEFAULT_EMAIL_QUOTA = 30_000


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(Text)
    email_confirmed: Mapped[bool] = mapped_column(server_default=text("false"))
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    display_name: Mapped[str | None] = mapped_column(Text)
    phone_number: Mapped[str | None] = mapped_column(Text)
    profile_image_url: Mapped[str | None] = mapped_column(Text)
    email_signature: Mapped[str | None] = mapped_column(Text)
    email_quota: Mapped[int] = mapped_column(server_default=text(str(DEFAULT_EMAIL_QUOTA)))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    deleted_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (Index("uq_users_email_lower", text("lower(email)"), unique=True),)


class BrandMember(Base):
    __tablename__ = "brand_members"
    brand: Mapped[uuid.UUID] = fk("brands.id", ondelete="CASCADE")
    user: Mapped[uuid.UUID] = fk("users.id", ondelete="CASCADE")
    role: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    __table_args__ = (
        PrimaryKeyConstraint("brand", "user"),
        one_of("role", ROLES, name="role"),
        Index("ix_brand_members_user", "user"),
    )


class ApiToken(Base):
    """Only a SHA-256 of the token is kept: a leaked database does not leak working tokens."""

    __tablename__ = "api_tokens"
    id: Mapped[uuid.UUID] = uuid_pk()
    user: Mapped[uuid.UUID] = fk("users.id", ondelete="CASCADE")
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    # The token's first characters, so its owner can tell which one to revoke; far too few to use it.
    hint: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    expires_at: Mapped[datetime | None] = timestamp()
    # Updated at most once a minute per token (see api.auth), not on every request.
    last_used_at: Mapped[datetime | None] = timestamp()
    revoked_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (Index("ix_api_tokens_user", "user"),)


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[uuid.UUID] = uuid_pk()
    brand: Mapped[uuid.UUID] = fk("brands.id")
    # In order; the first one is the primary address.
    emails: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    partner_email: Mapped[str | None] = mapped_column(Text)
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    profile_image_url: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    parked: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    deleted_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (
        Index("ix_contacts_brand_created_at", "brand", "created_at"),
        # Tag and address lookups are case-insensitive; mailroom_lower_array is defined in the migration.
        Index("ix_contacts_tags_lower", text("mailroom_lower_array(tags)"), postgresql_using="gin"),
        Index("ix_contacts_emails_lower", text("mailroom_lower_array(emails)"), postgresql_using="gin"),
    )


class CrmList(Base):
    __tablename__ = "crm_lists"
    id: Mapped[uuid.UUID] = uuid_pk()
    brand: Mapped[uuid.UUID] = fk("brands.id")
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    deleted_at: Mapped[datetime | None] = timestamp()
    __table_args__ = (Index("ix_crm_lists_brand", "brand"),)


class CrmListMember(Base):
    __tablename__ = "crm_list_members"
    list: Mapped[uuid.UUID] = fk("crm_lists.id", ondelete="CASCADE")
    contact: Mapped[uuid.UUID] = fk("contacts.id", ondelete="CASCADE")
    created_at: Mapped[datetime] = created_at()
    __table_args__ = (
        PrimaryKeyConstraint("list", "contact"),
        Index("ix_crm_list_members_contact", "contact"),
    )


class Agent(Base):
    """An agent of the MLS agent network: shared by every brand."""

    __tablename__ = "agents"
    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str | None] = mapped_column(Text)
    full_name: Mapped[str | None] = mapped_column(Text)
    mls_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()


class _MailboxCredential:
    """Columns shared by Google and Microsoft credentials. Tokens are stored encrypted (see crypto)."""

    id: Mapped[uuid.UUID] = uuid_pk()
    user: Mapped[uuid.UUID] = fk("users.id")
    brand: Mapped[uuid.UUID] = fk("brands.id")
    email: Mapped[str] = mapped_column(Text)
    scope_summary: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    revoked: Mapped[bool] = mapped_column(server_default=text("false"))
    access_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    refresh_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None] = timestamp()
    # Set by the sender when the provider throttles this mailbox: no sends through it before then.
    paused_until: Mapped[datetime | None] = timestamp()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None] = timestamp()
    deleted_at: Mapped[datetime | None] = timestamp()


class GoogleCredential(_MailboxCredential, Base):
    __tablename__ = "google_credentials"
    __table_args__ = (Index("ix_google_credentials_user", "user"),)


class MicrosoftCredential(_MailboxCredential, Base):
    __tablename__ = "microsoft_credentials"
    __table_args__ = (Index("ix_microsoft_credentials_user", "user"),)


class OAuthState(Base):
    """A mailbox connection under way: what the consent screen's callback will act on.

    The browser carries only a sealed nonce (the OAuth ``state``); the PKCE verifier stays here,
    encrypted, so nothing in a URL is enough to redeem an intercepted code. One use: the callback
    deletes the row it reads.
    """

    __tablename__ = "oauth_states"
    nonce: Mapped[str] = mapped_column(Text, primary_key=True)
    user: Mapped[uuid.UUID] = fk("users.id", ondelete="CASCADE")
    brand: Mapped[uuid.UUID] = fk("brands.id", ondelete="CASCADE")
    kind: Mapped[str] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    verifier: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = created_at()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        one_of("kind", ("google", "microsoft"), name="kind"),
        # Expired rows are swept by expiry; without it that is a scan.
        Index("ix_oauth_states_expires_at", "expires_at"),
    )


# A Literal, so that the answers' shapes name the same values the check constraint allows.
SuppressionReason = Literal["unsubscribed", "complained", "bounced"]
SUPPRESSION_REASONS: tuple[str, ...] = get_args(SuppressionReason)


class Suppression(Base):
    __tablename__ = "suppressions"
    brand: Mapped[uuid.UUID] = fk("brands.id", ondelete="CASCADE")
    # Stored lower-cased and trimmed, the form expansion compares with.
    email: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    # What the provider said (a bounce's message), for the Admin deciding whether to lift it.
    detail: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        PrimaryKeyConstraint("brand", "email"),
        one_of("reason", SUPPRESSION_REASONS, name="reason"),
        CheckConstraint("email = lower(btrim(email))", name="normalised"),
        Index("ix_suppressions_email", text("email")),
    )
