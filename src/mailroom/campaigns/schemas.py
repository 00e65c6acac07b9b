"""Request bodies of the campaign endpoints, checked before anything is written."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, StrictBool, StringConstraints, field_validator, model_validator
from typing_extensions import TypedDict

from mailroom.addresses import Address
from mailroom.campaigns.models import RecipientType, SendType
from mailroom.validation import Strict, Tag, storable, utc

# The one field each recipient type needs; Email may also name the contact it belongs to.
REQUIRED_FIELD: dict[str, str | None] = {
    "Email": "email",
    "Contact": "contact",
    "List": "list",
    "Tag": "tag",
    "Brand": "brand",
    "Agent": "agent",
    "AllContacts": None,
}
ALLOWED_FIELDS: dict[str, set[str]] = {t: {f} if f else set() for t, f in REQUIRED_FIELD.items()}
ALLOWED_FIELDS["Email"] = {"email", "contact"}
TARGET_FIELDS = ("email", "contact", "list", "tag", "brand", "agent")


# Strings PostgreSQL can store (no NUL, valid Unicode), within limits.
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(storable)]
Url = Annotated[str, Field(max_length=4000), AfterValidator(storable)]
Subject = Annotated[str, Field(max_length=998), AfterValidator(storable)]
Body = Annotated[str, Field(max_length=2_000_000), AfterValidator(storable)]


def _one_line(value: str) -> str:
    # These values become header lines (In-Reply-To, References) or provider API fields: a line break
    # would let a request add headers of its own, such as Bcc.
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("must not contain line breaks or NUL characters")
    return value


# RFC 5322 msg-id: <left@right>, no spaces or brackets inside.
_MSG_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
# A Microsoft Graph message id is URL-safe or standard base64 text.
_GRAPH_ID = re.compile(r"[A-Za-z0-9+/=_-]+")


def _msg_id(value: str) -> str:
    if not _MSG_ID.fullmatch(value):
        raise ValueError("must be a message id such as <id@example.com>")
    return value


def _msg_id_or_graph_id(value: str) -> str:
    if not (_MSG_ID.fullmatch(value) or _GRAPH_ID.fullmatch(value)):
        raise ValueError("must be a message id such as <id@example.com> or an Outlook message id")
    return value


HeaderText = Annotated[
    str, StringConstraints(min_length=1, max_length=998), AfterValidator(storable), AfterValidator(_one_line)
]


class CampaignHeaders(TypedDict, total=False):
    """What a campaign may ask of its headers: threading a reply in Gmail or Outlook, nothing else.

    Any other key is refused rather than stored: nothing would send it, and a free dict of headers
    is how a request would set From, Bcc or Reply-To behind the service's back.
    """

    __pydantic_config__ = ConfigDict(extra="forbid", str_strip_whitespace=False)  # type: ignore[misc]

    thread_id: HeaderText  # the Gmail thread to add the message to
    in_reply_to: Annotated[HeaderText, AfterValidator(_msg_id)]  # the Message-ID being answered
    # The Outlook message being answered: its Graph id, or its internet message id.
    message_id: Annotated[HeaderText, AfterValidator(_msg_id_or_graph_id)]


class RecipientIn(Strict):
    recipient_type: RecipientType
    email: Address | None = None
    contact: uuid.UUID | None = None
    list: uuid.UUID | None = None
    tag: Tag | None = None
    brand: uuid.UUID | None = None
    agent: uuid.UUID | None = None
    # Implied by the array the item is in (to, cc, bcc); a client may repeat it, but not contradict it.
    send_type: SendType | None = None

    @model_validator(mode="after")
    def _fields_match_type(self) -> RecipientIn:
        needed = REQUIRED_FIELD[self.recipient_type]
        if needed and getattr(self, needed) is None:
            raise ValueError(f"{needed} is required for recipient_type {self.recipient_type}")
        for name in TARGET_FIELDS:
            if getattr(self, name) is not None and name not in ALLOWED_FIELDS[self.recipient_type]:
                raise ValueError(f"{name} does not apply to recipient_type {self.recipient_type}")
        return self


class AttachmentIn(Strict):
    file: uuid.UUID | None = None
    url: Url | None = None
    name: Name | None = None
    is_inline: StrictBool = False
    content_id: Name | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _file_or_url(self) -> AttachmentIn:
        if (self.file is None) == (self.url is None):
            raise ValueError("exactly one of file or url is required")
        if self.url is not None and not self.name:
            raise ValueError("name is required with url")
        return self


class CampaignIn(Strict):
    """POST /emails and PUT /emails/:id. `id`, `created_by` and `brand` may be sent as the document shows."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, populate_by_name=True)

    id: uuid.UUID | None = None
    created_by: uuid.UUID | None = None
    brand: uuid.UUID | None = None
    from_: uuid.UUID | None = Field(default=None, alias="from")
    to: list[RecipientIn] = Field(min_length=1, max_length=1000)
    cc: list[RecipientIn] | None = Field(default=None, max_length=1000)
    bcc: list[RecipientIn] | None = Field(default=None, max_length=1000)
    subject: Subject
    html: Body | None = None
    text: Body | None = None
    due_at: Annotated[datetime, AfterValidator(utc)] | None = None
    tags: list[Tag] | None = Field(default=None, max_length=50)
    headers: CampaignHeaders | None = None
    include_signature: StrictBool | None = None
    individual: StrictBool | None = None
    notifications_enabled: StrictBool | None = None
    archive: StrictBool | None = None
    # Not in the document: false sends this campaign's links and images untracked (default true).
    tracking: StrictBool | None = None
    google_credential: uuid.UUID | None = None
    microsoft_credential: uuid.UUID | None = None
    attachments: list[AttachmentIn] | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _one_credential(self) -> CampaignIn:
        if self.google_credential and self.microsoft_credential:
            raise ValueError("google_credential and microsoft_credential cannot both be set")
        return self

    def recipients(self) -> list[tuple[str, int, RecipientIn]]:
        """Every recipient item with the array it came in: (send_type, index, item)."""
        out: list[tuple[str, int, RecipientIn]] = []
        for send_type, items in (("To", self.to), ("CC", self.cc or []), ("BCC", self.bcc or [])):
            out.extend((send_type, i, item) for i, item in enumerate(items))
        return out

    @model_validator(mode="after")
    def _send_types_match_arrays(self) -> CampaignIn:
        for send_type, index, item in self.recipients():
            if item.send_type is not None and item.send_type != send_type:
                raise ValueError(f"{field_path(send_type, index, 'send_type')}: must be {send_type} in this array")
        return self


class NotificationsIn(Strict):
    status: StrictBool


def field_path(send_type: str, index: int, name: str | None = None) -> str:
    array = {"To": "to", "CC": "cc", "BCC": "bcc"}[send_type]
    return f"{array}.{index}" + (f".{name}" if name else "")
