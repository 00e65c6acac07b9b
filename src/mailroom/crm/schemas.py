"""Request bodies of the CRM endpoints, and the wire shape of what they answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, NotRequired, get_args

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from sqlalchemy import RowMapping
from typing_extensions import TypedDict

from mailroom.addresses import Address
from mailroom.crm.models import Agent, ApiToken, Brand, GoogleCredential, MicrosoftCredential, User
from mailroom.crm.tokens import MAX_TOKEN_DAYS
from mailroom.serialize import Epoch, EpochSet, closed, epoch, full_name
from mailroom.validation import FILLED, STORABLE, Strict, Tag, Timestamp, storable

# One request may create this many contacts (or add this many list members): large enough for a
# real import, small enough that one statement and one answer stay well under a second.
MAX_PER_CALL = 10_000

Scope = Literal["profile", "contacts", "mail.read", "mail.send", "mail.modify", "calendar"]
SCOPES: tuple[str, ...] = get_args(Scope)
# Provider tokens are a few hundred to a few thousand characters; this only bounds abuse.
MAX_TOKEN = 20_000


def _storable_secret(value: SecretStr) -> SecretStr:
    # Checked here rather than with Field limits, which SecretStr words as "items".
    secret = value.get_secret_value()
    if not secret:
        raise ValueError("must not be empty")
    if len(secret) > MAX_TOKEN:
        raise ValueError(f"must be at most {MAX_TOKEN} characters")
    storable(secret)
    return value


# Length limits come before the text check so they are enforced (and worded) as string limits.
Name = Annotated[str, StringConstraints(max_length=200), STORABLE]
RequiredName = Annotated[str, StringConstraints(min_length=1, max_length=200), FILLED]
Url = Annotated[str, StringConstraints(max_length=2000), STORABLE]
MlsId = Annotated[str, StringConstraints(max_length=100), STORABLE]
# The document states _storable_secret's limits, which it cannot read off a SecretStr.
_TOKEN_SCHEMA = {
    "type": "string",
    "format": "password",
    "writeOnly": True,
    "minLength": 1,
    "maxLength": MAX_TOKEN,
    "pattern": "^[^\\u0000]*$",
}
Token = Annotated[SecretStr, AfterValidator(_storable_secret), WithJsonSchema(_TOKEN_SCHEMA)]


class BrandIn(Strict):
    name: RequiredName
    parent: uuid.UUID | None = None


Role = Literal["Admin", "Agent"]


class UserIn(Strict):
    email: Address
    role: Role = "Agent"
    first_name: Name | None = None
    last_name: Name | None = None
    display_name: Name | None = None
    phone_number: Annotated[str, StringConstraints(max_length=50), STORABLE] | None = None
    profile_image_url: Url | None = None
    email_signature: Annotated[str, StringConstraints(max_length=20000), STORABLE] | None = None


class InvitationIn(Strict):
    email: Address
    role: Role = "Agent"


class ContactIn(Strict):
    emails: list[Address] = Field(default_factory=list, max_length=50, description="In order; the first is primary")
    first_name: Name | None = None
    last_name: Name | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=200)
    partner_email: Address | None = None
    parked: StrictBool = False
    profile_image_url: Url | None = None


class ContactsIn(Strict):
    contacts: list[ContactIn] = Field(min_length=1, max_length=MAX_PER_CALL)


class ListIn(Strict):
    name: RequiredName
    members: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_PER_CALL, description="Contact ids")


class MembersIn(Strict):
    members: list[uuid.UUID] = Field(min_length=1, max_length=MAX_PER_CALL, description="Contact ids")


class AgentIn(Strict):
    email: Address
    full_name: Name | None = None
    mls_id: MlsId | None = None


class CredentialIn(Strict):
    """A mailbox the calling user connected. Tokens are write-only: stored encrypted, never answered."""

    email: Address
    scope_summary: list[Scope] = Field(min_length=1, max_length=len(SCOPES))
    access_token: Token
    refresh_token: Token | None = None
    expires_at: Timestamp | None = Field(default=None, description="ISO 8601 or epoch seconds")


@closed
class BrandOut(TypedDict):
    """A brand (a brokerage or a team within one): its members send as it and see its campaigns."""

    id: uuid.UUID
    name: str
    parent: Annotated[uuid.UUID | None, Field(description="The brand this one is a team of")]
    created_at: EpochSet
    updated_at: Epoch
    deleted_at: Epoch
    type: Literal["brand"]


def brand_out(brand: Brand) -> BrandOut:
    return {
        "id": brand.id,
        "name": brand.name,
        "parent": brand.parent,
        "created_at": epoch(brand.created_at),
        "updated_at": epoch(brand.updated_at),
        "deleted_at": epoch(brand.deleted_at),
        "type": "brand",
    }


@closed
class UserOut(TypedDict):
    """A user of the service: an agent or a broker who sends campaigns."""

    id: uuid.UUID
    email: str
    email_confirmed: Annotated[bool, Field(description="Mail leaves From this address only once confirmed")]
    first_name: str | None
    last_name: str | None
    display_name: str | None
    phone_number: str | None
    profile_image_url: str | None
    email_signature: str | None
    email_quota: Annotated[int | None, Field(description="Recipients a month through the service's ESP")]
    created_at: EpochSet
    updated_at: Epoch
    type: Literal["user"]
    role: NotRequired[Annotated[str, Field(description="The user's role in the brand answered about")]]


def user_out(user: User, *, role: str | None = None) -> UserOut:
    out: UserOut = {
        "id": user.id,
        "email": user.email,
        "email_confirmed": user.email_confirmed,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "display_name": user.display_name,
        "phone_number": user.phone_number,
        "profile_image_url": user.profile_image_url,
        "email_signature": user.email_signature,
        "email_quota": user.email_quota,
        "created_at": epoch(user.created_at),
        "updated_at": epoch(user.updated_at),
        "type": "user",
    }
    if role is not None:
        out["role"] = role
    return out


@closed
class ContactOut(TypedDict):
    """A contact of a brand's CRM."""

    id: uuid.UUID
    brand: uuid.UUID
    email: Annotated[str | None, Field(description="The primary address: the one campaigns are sent to")]
    emails: list[str]
    partner_email: str | None
    first_name: str | None
    last_name: str | None
    display_name: str | None
    profile_image_url: str | None
    tags: list[str] | None
    parked: Annotated[bool, Field(description="A parked contact receives no campaign")]
    created_at: EpochSet
    updated_at: Epoch
    deleted_at: Epoch
    type: Literal["contact"]


def contact_out(row: RowMapping) -> ContactOut:
    emails: list[str] = row["emails"]
    primary = emails[0] if emails else None
    return {
        "id": row["id"],
        "brand": row["brand"],
        "email": primary,
        "emails": emails,
        "partner_email": row["partner_email"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "display_name": full_name(row["first_name"], row["last_name"]) or primary,
        "profile_image_url": row["profile_image_url"],
        "tags": row["tags"],
        "parked": row["parked"],
        "created_at": epoch(row["created_at"]),
        "updated_at": epoch(row["updated_at"]),
        "deleted_at": epoch(row["deleted_at"]),
        "type": "contact",
    }


@closed
class CrmListOut(TypedDict):
    """A list of a brand's CRM: campaigns sent to it reach the primary address of each member."""

    id: uuid.UUID
    brand: uuid.UUID
    name: str
    members_count: int | None
    created_at: EpochSet
    updated_at: Epoch
    deleted_at: Epoch
    type: Literal["crm_list"]


def list_out(row: RowMapping) -> CrmListOut:
    return {
        "id": row["id"],
        "brand": row["brand"],
        "name": row["name"],
        "members_count": row["members_count"],
        "created_at": epoch(row["created_at"]),
        "updated_at": epoch(row["updated_at"]),
        "deleted_at": epoch(row["deleted_at"]),
        "type": "crm_list",
    }


@closed
class AgentOut(TypedDict):
    """An MLS agent of the agent network."""

    id: uuid.UUID
    email: str | None
    full_name: str | None
    mls_id: str | None
    created_at: EpochSet
    updated_at: Epoch
    type: Literal["agent"]


def agent_out(agent: Agent) -> AgentOut:
    return {
        "id": agent.id,
        "email": agent.email,
        "full_name": agent.full_name,
        "mls_id": agent.mls_id,
        "created_at": epoch(agent.created_at),
        "updated_at": epoch(agent.updated_at),
        "type": "agent",
    }


@closed
class CredentialOut(TypedDict):
    """A connected Gmail or Outlook mailbox; its tokens are never answered."""

    id: uuid.UUID
    user: uuid.UUID
    brand: uuid.UUID
    email: str
    scope_summary: list[str]
    revoked: bool
    expires_at: Epoch
    created_at: EpochSet
    updated_at: Epoch
    deleted_at: Epoch
    type: Literal["google_credential", "microsoft_credential"]


def credential_out(
    credential: GoogleCredential | MicrosoftCredential, *, kind: Literal["google", "microsoft"]
) -> CredentialOut:
    """Google and Microsoft credentials share this shape; the tokens are deliberately absent."""
    return {
        "id": credential.id,
        "user": credential.user,
        "brand": credential.brand,
        "email": credential.email,
        "scope_summary": credential.scope_summary,
        "revoked": credential.revoked,
        "expires_at": epoch(credential.expires_at),
        "created_at": epoch(credential.created_at),
        "updated_at": epoch(credential.updated_at),
        "deleted_at": epoch(credential.deleted_at),
        "type": "google_credential" if kind == "google" else "microsoft_credential",
    }


class TokenIn(Strict):
    """A new API token of the calling user; without an expiry it works until revoked."""

    name: RequiredName | None = None
    expires_in_days: Annotated[int, Field(ge=1, le=MAX_TOKEN_DAYS, strict=True)] | None = None
    expires_at: Timestamp | None = Field(default=None, description="ISO 8601 or epoch seconds; in the future")

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        now = datetime.now(UTC)
        if value is not None and value <= now:
            raise ValueError("must be in the future")
        if value is not None and value > now + timedelta(days=MAX_TOKEN_DAYS):
            raise ValueError(f"must be at most {MAX_TOKEN_DAYS} days ahead")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> TokenIn:
        if self.expires_in_days is not None and self.expires_at is not None:
            raise ValueError("expires_at: cannot be given with expires_in_days")
        return self

    def expiry(self) -> datetime | None:
        if self.expires_in_days is not None:
            return datetime.now(UTC) + timedelta(days=self.expires_in_days)
        return self.expires_at


@closed
class TokenOut(TypedDict):
    """An API token as its owner sees it: never the token, never its hash."""

    id: uuid.UUID
    name: str | None
    hint: Annotated[str | None, Field(description="The token's first characters, to tell tokens apart")]
    created_at: EpochSet
    expires_at: Epoch
    last_used_at: Epoch
    revoked_at: Epoch
    type: Literal["api_token"]


def token_out(token: ApiToken) -> TokenOut:
    """What a user may see of a token: never the token, never its hash."""
    return {
        "id": token.id,
        "name": token.name,
        "hint": token.hint,
        "created_at": epoch(token.created_at),
        "expires_at": epoch(token.expires_at),
        "last_used_at": epoch(token.last_used_at),
        "revoked_at": epoch(token.revoked_at),
        "type": "api_token",
    }


@closed
class NewTokenOut(TokenOut):
    """An API token just created: the one answer that holds the token itself."""

    token: Annotated[str, Field(description="Send it as `Authorization: Bearer <token>`; it is never shown again")]


def new_token_out(token: ApiToken, secret: str) -> NewTokenOut:
    return {**token_out(token), "token": secret}


@closed
class InvitationOut(TypedDict):
    """An invitation to join a brand: a signed token, stored nowhere, that only the invited address's own
    account can accept."""

    type: Literal["invitation"]
    token: Annotated[
        str, Field(description="Accepted with `POST /invitations/{token}/accept` and the invited user's API token")
    ]
    brand: uuid.UUID
    email: Annotated[str, Field(description="The invited address, in lower case")]
    role: Annotated[Role, Field(description="The role the invited user gets on accepting")]
    expires_at: Annotated[int, Field(description="When the token stops working, in whole epoch seconds")]


@closed
class MembershipOut(TypedDict):
    """The accepting user's membership of the brand an invitation named."""

    type: Literal["brand_membership"]
    brand: uuid.UUID
    user: uuid.UUID
    role: Annotated[str, Field(description="Admin or Agent: the role held now (a member already keeps theirs)")]


@closed
class AuthUrlOut(TypedDict):
    """Where to send the user's browser to connect a mailbox."""

    url: Annotated[str, Field(description="The provider's consent screen; valid for 10 minutes, works once")]
