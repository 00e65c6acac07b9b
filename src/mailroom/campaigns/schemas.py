"""Request bodies of the campaign endpoints, checked before anything is written, and the shapes of their answers."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from mailroom.addresses import Address
from mailroom.campaigns.models import RecipientType, SendType
from mailroom.crm.schemas import AgentOut, BrandOut, ContactOut, CrmListOut, UserOut
from mailroom.serialize import Epoch, EpochSet, closed
from mailroom.validation import BLANK, FILLED, STORABLE, Strict, Tag, Timestamp, storable

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


# Strings PostgreSQL can store (no NUL, valid Unicode), within limits. Names are an attachment's, stripped.
Name = Annotated[str, Field(min_length=1, max_length=255), FILLED]
Url = Annotated[str, Field(max_length=4000), STORABLE]
Subject = Annotated[str, Field(max_length=998), STORABLE]
Body = Annotated[str, Field(max_length=2_000_000), STORABLE]


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
# The same, as the document's patterns (`\s` spelled out, NUL excluded as _one_line does).
_MSG_ID_PATTERN = f"<[^<>@\\u0000{BLANK}]+@[^<>@\\u0000{BLANK}]+>"
_GRAPH_ID_PATTERN = _GRAPH_ID.pattern


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


def _header(pattern: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 998, "pattern": pattern})


class CampaignHeaders(TypedDict, total=False):
    """What a campaign may ask of its headers: threading a reply in Gmail or Outlook, nothing else.

    Any other key is refused rather than stored: nothing would send it, and a free dict of headers
    is how a request would set From, Bcc or Reply-To behind the service's back.
    """

    __pydantic_config__ = ConfigDict(extra="forbid", str_strip_whitespace=False)  # type: ignore[misc]

    thread_id: Annotated[HeaderText, _header("^[^\\r\\n\\u0000]*$")]  # the Gmail thread to add the message to
    # The Message-ID being answered.
    in_reply_to: Annotated[HeaderText, AfterValidator(_msg_id), _header(f"^{_MSG_ID_PATTERN}$")]
    # The Outlook message being answered: its Graph id, or its internet message id.
    message_id: Annotated[
        HeaderText, AfterValidator(_msg_id_or_graph_id), _header(f"^(?:{_MSG_ID_PATTERN}|{_GRAPH_ID_PATTERN})$")
    ]


def _one_object_per_type(schema: dict[str, Any]) -> None:
    """The document shows a recipient as one object per recipient_type: its own field required and not null,
    the fields of other types absent or null. That is the rule _fields_match_type enforces (and words), which
    one object with every field optional cannot show."""
    fields = schema.pop("properties")
    del schema["required"], schema["additionalProperties"]

    def not_null(name: str) -> dict[str, Any]:
        return next(branch for branch in fields[name]["anyOf"] if branch.get("type") != "null")

    variants = []
    for kind, needed in REQUIRED_FIELD.items():
        properties = {"recipient_type": {"const": kind}, "send_type": fields["send_type"]}
        for name in TARGET_FIELDS:
            allowed = name in ALLOWED_FIELDS[kind]
            properties[name] = not_null(name) if name == needed else fields[name] if allowed else {"type": "null"}
        required = ["recipient_type", needed] if needed else ["recipient_type"]
        variants.append(
            {
                "title": kind,
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
        )
    schema["oneOf"] = variants


class RecipientIn(Strict):
    model_config = ConfigDict(json_schema_extra=_one_object_per_type)

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


def _file_or_url(schema: dict[str, Any]) -> None:
    """The document shows an attachment as a file or a URL with a name (_file_or_url's rule, and wording)."""
    fields = schema.pop("properties")
    del schema["additionalProperties"]

    def not_null(name: str) -> dict[str, Any]:
        return next(branch for branch in fields[name]["anyOf"] if branch.get("type") != "null")

    shared = {name: fields[name] for name in ("is_inline", "content_id")}
    schema["oneOf"] = [
        {
            "title": "An uploaded file",
            "type": "object",
            "properties": {"file": not_null("file"), "url": {"type": "null"}, "name": fields["name"], **shared},
            "required": ["file"],
            "additionalProperties": False,
        },
        {
            "title": "A URL, fetched when the campaign is sent",
            "type": "object",
            "properties": {"file": {"type": "null"}, "url": not_null("url"), "name": not_null("name"), **shared},
            "required": ["url", "name"],
            "additionalProperties": False,
        },
    ]


# What _http_url takes, for the document (case aside, as it reads it).
_HTTP_URL = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\u0000]*$"


class AttachmentIn(Strict):
    model_config = ConfigDict(json_schema_extra=_file_or_url)

    file: uuid.UUID | None = None
    url: Annotated[Url, WithJsonSchema({"type": "string", "maxLength": 4000, "pattern": _HTTP_URL})] | None = None
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


def _campaign_rules(schema: dict[str, Any]) -> None:
    """What the model's own checks refuse, shown in the document: a recipient's send_type, when given, is that of
    its array (_send_types_match_arrays); the two mailbox credentials exclude each other (_one_credential)."""
    for send_type, array in (("To", "to"), ("CC", "cc"), ("BCC", "bcc")):
        field = schema["properties"][array]
        listed = field if "items" in field else next(branch for branch in field["anyOf"] if "items" in branch)
        own = {"properties": {"send_type": {"enum": [send_type, None]}}}
        listed["items"] = {"allOf": [listed["items"], own]}
    schema["not"] = {
        "required": ["google_credential", "microsoft_credential"],
        "properties": {"google_credential": {"type": "string"}, "microsoft_credential": {"type": "string"}},
    }


CampaignTag = Annotated[str, StringConstraints(min_length=1, max_length=200), STORABLE]


class CampaignIn(Strict):
    """POST /emails and PUT /emails/:id. `id`, `created_by` and `brand` may be sent as the document shows."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=False, populate_by_name=True, json_schema_extra=_campaign_rules
    )

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
    due_at: Timestamp | None = None
    # Not stripped (this model keeps its strings as sent), so a blank tag is taken.
    tags: list[CampaignTag] | None = Field(default=None, max_length=50)
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


def _individual_rules(schema: dict[str, Any]) -> None:
    _campaign_rules(schema)
    for array in ("cc", "bcc"):
        schema["properties"][array] = {
            "anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}],
            "description": "Not taken: each recipient gets a message of their own",
        }


class IndividualCampaignIn(CampaignIn):
    """POST /emails/individual. The same fields, checked the same way; the document also shows the service's
    refusal of cc and bcc, which one message per recipient cannot carry."""

    model_config = ConfigDict(json_schema_extra=_individual_rules)


class NotificationsIn(Strict):
    status: StrictBool


def field_path(send_type: str, index: int, name: str | None = None) -> str:
    array = {"To": "to", "CC": "cc", "BCC": "bcc"}[send_type]
    return f"{array}.{index}" + (f".{name}" if name else "")


# What the API answers. Descriptions follow the API document's data model.
Count = Annotated[int, Field(description="Distinct recipients this happened to")]


# Written out, key by key, because the type checker cannot read a TypedDict made from EVENT_TYPES;
# tests/test_event_types.py fails when the two disagree.
@closed
class CountersOut(TypedDict):
    """What happened to the mail: each counter counts a recipient once per event type."""

    accepted: Annotated[int, Field(description="Accepted by the provider for delivery")]
    rejected: Annotated[int, Field(description="Refused by the provider before any attempt")]
    delivered: Annotated[int, Field(description="Accepted by the recipient's mail server")]
    failed: Annotated[int, Field(description="Could not be delivered")]
    opened: Count
    clicked: Count
    unsubscribed: Count
    complained: Annotated[int, Field(description="Marked as spam")]
    stored: Count


@closed
class RecipientOut(TypedDict):
    """One recipient item of a campaign (an address, a contact, a list, a tag, a brand, an agent or
    all contacts); the contact, list, brand and agent are expanded only when their association is asked for."""

    id: uuid.UUID
    created_at: EpochSet
    updated_at: Epoch
    deleted_at: Epoch
    campaign: uuid.UUID
    tag: Annotated[str | None, Field(description="Tag: every contact with this tag")]
    email: Annotated[str | None, Field(description="Email: this address")]
    send_type: Annotated[SendType, Field(description="To, CC or BCC")]
    recipient_type: RecipientType
    type: Literal["email_campaign_recipient"]
    contact: NotRequired[Annotated[ContactOut | None, Field(description="email_campaign_recipient.contact")]]
    list: NotRequired[Annotated[CrmListOut | None, Field(description="email_campaign_recipient.list")]]
    brand: NotRequired[Annotated[BrandOut | None, Field(description="email_campaign_recipient.brand")]]
    agent: NotRequired[Annotated[AgentOut | None, Field(description="email_campaign_recipient.agent")]]


@closed
class AttachmentOut(TypedDict):
    """A file attached to a campaign (an upload or a URL fetched at send time)."""

    id: uuid.UUID
    campaign: uuid.UUID
    file: Annotated[uuid.UUID | None, Field(description="The uploaded file; null for a URL")]
    url: str | None
    name: str | None
    is_inline: Annotated[bool, Field(description="Shown in the body through its content_id")]
    content_id: str | None
    created_at: EpochSet
    updated_at: Epoch
    deleted_at: Epoch
    type: Literal["email_campaign_attachment"]


_EmailFrom = TypedDict("_EmailFrom", {"from": Annotated[str, Field(description="The From header as sent")]})


@closed
class EmailOut(_EmailFrom, CountersOut):
    """One message that has been sent; its bodies come with the email.html and email.text associations."""

    id: uuid.UUID
    created_at: EpochSet
    to: list[str]
    subject: str | None
    headers: dict[str, Any]
    mailgun_id: Annotated[str | None, Field(description="The provider's message id")]
    domain: Annotated[str | None, Field(description="The sending domain")]
    campaign: uuid.UUID | None
    cc: list[str]
    bcc: list[str]
    tags: list[str] | None
    google_id: str | None
    microsoft_id: str | None
    tracking_id: uuid.UUID
    google_credential: uuid.UUID | None
    microsoft_credential: uuid.UUID | None
    sent_at: Annotated[str | None, Field(description="ISO 8601")]
    type: Literal["email"]
    html: NotRequired[str | None]
    text: NotRequired[str | None]


@closed
class CampaignEmailOut(CountersOut):
    """One recipient address of a campaign and what happened to its mail."""

    id: uuid.UUID
    campaign: uuid.UUID
    email: NotRequired[Annotated[EmailOut | None, Field(description="email_campaign_email.email")]]
    send_type: SendType
    email_address: str
    agent: uuid.UUID | None
    error: Annotated[str | None, Field(description="Why this recipient's mail failed")]
    type: Literal["email_campaign_email"]
    full_name: Annotated[str | None, Field(description="The contact's name, when the address is a contact's")]
    profile_image_url: str | None


_CampaignFrom = TypedDict(
    "_CampaignFrom", {"from": NotRequired[Annotated[UserOut | None, Field(description="email_campaign.from")]]}
)


@closed
class CampaignOut(_CampaignFrom, CountersOut):
    """An email campaign: one or more emails sent together so they are tracked together."""

    id: uuid.UUID
    created_at: EpochSet
    updated_at: Epoch
    deleted_at: Epoch
    created_by: uuid.UUID
    brand: uuid.UUID
    subject: str
    include_signature: bool
    html: str | None
    due_at: Annotated[float | None, Field(description="When it is sent, in epoch seconds; null: a draft")]
    executed_at: Annotated[float | None, Field(description="When sending began, in epoch seconds")]
    individual: Annotated[bool, Field(description="Sent as one message per recipient")]
    text: str | None
    headers: dict[str, Any]
    google_credential: uuid.UUID | None
    microsoft_credential: uuid.UUID | None
    thread_key: str | None
    failed_at: Epoch
    failed_within: str | None
    failure: Annotated[str | None, Field(description="Why the campaign failed")]
    notifications_enabled: bool
    archive: bool
    tracking: Annotated[bool, Field(description="Opens and clicks are tracked")]
    tags: list[str] | None
    recipients_count: Annotated[int | None, Field(description="Recipients once the campaign has been expanded")]
    listed: bool
    type: Literal["email_campaign"]
    sent: Annotated[int, Field(description="Emails actually sent")]
    from_address_verified: Annotated[
        bool, Field(description="Mail leaves From the sender's address (confirmed, or through their own mailbox)")
    ]
    recipients: NotRequired[Annotated[list[RecipientOut] | None, Field(description="email_campaign.recipients")]]
    attachments: NotRequired[Annotated[list[AttachmentOut] | None, Field(description="email_campaign.attachments")]]
    emails: NotRequired[Annotated[list[CampaignEmailOut] | None, Field(description="email_campaign.emails")]]
    template: NotRequired[Annotated[None, Field(description="email_campaign.template: not stored by this service")]]
    deal: NotRequired[Annotated[None, Field(description="email_campaign.deal: not stored by this service")]]
