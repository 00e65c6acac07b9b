"""The compose form: what a person typed, turned into the API's own campaign body, and the API's refusals
turned back into messages next to the fields they are about.

Nothing here decides whether a campaign is acceptable: the body is parsed by ``CampaignIn`` from JSON, as
``POST /emails`` parses it, and checked by the campaigns service. This module only translates between the
form's fields and the API's.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from mailroom.campaigns.schemas import CampaignIn
from mailroom.errors import MailroomError

SCHEDULES = ("draft", "now", "at")
# A person separates addresses with commas, semicolons, spaces or one per line.
ADDRESS_SEPARATORS = re.compile(r"[,;\s]+")
DATETIME_LOCAL = "%Y-%m-%dT%H:%M"


@dataclass
class ComposeForm:
    """The form's fields as typed; multi-valued ones are lists of the values ticked."""

    subject: str = ""
    html: str = ""
    text: str = ""
    addresses: str = ""
    tags: list[str] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)
    contacts: list[str] = field(default_factory=list)
    # Ids of the uploaded files attached (ticked).
    attachments: list[str] = field(default_factory=list)
    everyone: bool = False
    agents: bool = False
    sender: str = ""
    tracking: bool = True
    # "google:<id>" or "microsoft:<id>", or empty for the service's own sending.
    mailbox: str = ""
    schedule: str = "draft"
    send_at: str = ""
    contact_search: str = ""
    preview_contact: str = ""

    @classmethod
    def from_post(cls, form: FormData) -> ComposeForm:
        def one(name: str) -> str:
            value = form.get(name)
            return value if isinstance(value, str) else ""

        def many(name: str) -> list[str]:
            return [v for v in form.getlist(name) if isinstance(v, str) and v]

        schedule = one("schedule")
        return cls(
            subject=one("subject"),
            html=one("html"),
            text=one("text"),
            addresses=one("addresses"),
            tags=many("tags"),
            lists=many("lists"),
            contacts=many("contacts"),
            attachments=many("attachments"),
            everyone=bool(one("everyone")),
            agents=bool(one("agents")),
            sender=one("sender"),
            # An unticked checkbox sends nothing; the hidden "tracking_shown" says the box was on the form.
            tracking=bool(one("tracking")) or not one("tracking_shown"),
            mailbox=one("mailbox"),
            schedule=schedule if schedule in SCHEDULES else "draft",
            send_at=one("send_at"),
            contact_search=one("contact_search"),
            preview_contact=one("preview_contact"),
        )

    @classmethod
    def from_campaign(cls, campaign: Any, recipients: list[Any], attachments: list[Any]) -> ComposeForm:
        """The form as it shows a stored campaign (its ORM row, its recipient rows and its attachment rows)."""
        form = cls(
            subject=campaign.subject or "",
            html=campaign.html or "",
            text=campaign.text or "",
            sender=str(campaign.from_),
            tracking=campaign.tracking,
            schedule="at" if campaign.due_at is not None else "draft",
            send_at=campaign.due_at.astimezone(UTC).strftime(DATETIME_LOCAL) if campaign.due_at else "",
            attachments=[str(a.file) for a in attachments if a.file is not None],
        )
        if campaign.google_credential:
            form.mailbox = f"google:{campaign.google_credential}"
        elif campaign.microsoft_credential:
            form.mailbox = f"microsoft:{campaign.microsoft_credential}"
        addresses = []
        for item in recipients:
            kind = item.recipient_type
            if kind == "Email":
                addresses.append(item.email)
            elif kind == "Tag":
                form.tags.append(item.tag)
            elif kind == "List":
                form.lists.append(str(item.list))
            elif kind == "Contact":
                form.contacts.append(str(item.contact))
            elif kind == "AllContacts":
                form.everyone = True
            elif kind == "Brand":
                form.agents = True
        form.addresses = "\n".join(addresses)
        return form

    def address_list(self) -> list[str]:
        return [a for a in ADDRESS_SEPARATORS.split(self.addresses) if a]


class FormErrors(Exception):
    """Messages by form field ("form" for those that belong to none)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def due_at(form: ComposeForm, now: datetime) -> datetime | None:
    """When the campaign is to go: None for a draft. The form's time is read as UTC, as the page says."""
    if form.schedule == "draft":
        return None
    if form.schedule == "now":
        return now
    try:
        return datetime.strptime(form.send_at, DATETIME_LOCAL).replace(tzinfo=UTC)
    except ValueError:
        raise FormErrors({"send_at": "give a date and time, such as 2031-05-01T15:00 (UTC)"}) from None


def kept_fields(campaign: Any) -> dict[str, Any]:
    """What a stored campaign holds that the form does not show: an edit keeps it as it was (the API's PUT
    replaces the whole campaign, so the form's body must carry it)."""
    return {
        "tags": campaign.tags,
        "headers": campaign.headers or None,
        "include_signature": campaign.include_signature,
        "individual": campaign.individual,
        "notifications_enabled": campaign.notifications_enabled,
        "archive": campaign.archive,
    }


def campaign_body(
    form: ComposeForm, brand: uuid.UUID, *, due: datetime | None, kept: dict[str, Any] | None = None
) -> CampaignIn:
    """The API's campaign body for the form, parsed as ``POST /emails`` parses its JSON."""
    to: list[dict[str, Any]] = [{"recipient_type": "Email", "email": a} for a in form.address_list()]
    to += [{"recipient_type": "Tag", "tag": t} for t in form.tags]
    to += [{"recipient_type": "List", "list": value} for value in form.lists]
    to += [{"recipient_type": "Contact", "contact": c} for c in form.contacts]
    if form.everyone:
        to.append({"recipient_type": "AllContacts"})
    if form.agents:
        # The brand's Agent-role members (and those of its teams), as a Brand recipient reaches them.
        to.append({"recipient_type": "Brand", "brand": str(brand)})
    body: dict[str, Any] = {
        **(kept or {}),
        "brand": str(brand),
        "to": to,
        "subject": form.subject,
        "html": form.html or None,
        "text": form.text or None,
        "due_at": due.isoformat() if due else None,
        "tracking": form.tracking,
        "attachments": [{"file": f} for f in form.attachments],
    }
    if form.sender:
        body["from"] = form.sender
    kind, _, credential = form.mailbox.partition(":")
    if kind in ("google", "microsoft") and credential:
        body[f"{kind}_credential"] = credential
    try:
        return CampaignIn.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        raise FormErrors(_schema_errors(exc)) from None


# The API's field names, by the form field that holds them.
FORM_FIELD = {
    "subject": "subject",
    "html": "html",
    "text": "text",
    "from": "sender",
    "google_credential": "mailbox",
    "microsoft_credential": "mailbox",
    "due_at": "send_at",
    "to": "recipients",
    "cc": "recipients",
    "bcc": "recipients",
    "brand": "recipients",
    "attachments": "attachments",
}


def form_field(api_field: str | None) -> str:
    head = (api_field or "").split(".")[0]
    return FORM_FIELD.get(head, "form")


def _schema_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if not str(p).startswith(("function-", "union["))]
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        name = form_field(location[0] if location else None)
        if name == "recipients" and location[:1] == ["to"] and len(location) == 1:
            message = "choose at least one recipient" if error.get("type") == "too_short" else message
        elif name == "recipients" and len(location) > 1:
            message = f"{error.get('input')!s}: {message}" if isinstance(error.get("input"), str) else message
        errors.setdefault(name, message)
    return errors


def service_errors(exc: MailroomError) -> FormErrors:
    """A refusal of the campaigns service, next to the form field it names."""
    reason = exc.message.removeprefix(f"{exc.field}: ") if exc.field else exc.message
    return FormErrors({form_field(exc.field): reason})
