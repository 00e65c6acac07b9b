"""A campaign as one recipient would get it, before anything is sent.

The body to preview is either given (subject, html, text: a draft in an editor) or a stored campaign the
caller can read. It is checked as a create would check it (a missing variable names its line) and
rendered through the same bounded renderer the sender uses, for a contact of the brand or, without one,
for a sample recipient. The sender is the stored campaign's `from` user, or the caller for a draft.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import TypedDict

from mailroom.campaigns import reads
from mailroom.campaigns.schemas import Body, Subject
from mailroom.campaigns.service import check_templates
from mailroom.db import driver_connection
from mailroom.errors import BadRequest, NotFound
from mailroom.serialize import closed
from mailroom.templating.render import TemplateError
from mailroom.templating.renderer import CampaignTemplates, RenderPool
from mailroom.templating.variables import SAMPLE_CONTEXT, recipient_values, sender_values
from mailroom.validation import Strict


def _given(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"type": "string"}}}


def _campaign_or_body_rule(schema: dict[str, Any]) -> None:
    """_campaign_or_body, shown in the document: a campaign, or a subject, and never a campaign with a body."""
    schema["anyOf"] = [_given("campaign"), _given("subject")]
    schema["not"] = {"allOf": [_given("campaign"), {"anyOf": [_given(f) for f in ("subject", "html", "text")]}]}


class PreviewIn(Strict):
    """A stored campaign (`campaign`) or a body (`subject` with `html` and/or `text`), for a contact or a sample."""

    model_config = ConfigDict(json_schema_extra=_campaign_or_body_rule)

    campaign: uuid.UUID | None = None
    subject: Subject | None = None
    html: Body | None = None
    text: Body | None = None
    contact: Annotated[
        uuid.UUID | None, Field(description="Render for this contact of the brand (default: a sample recipient)")
    ] = None
    brand: Annotated[uuid.UUID | None, Field(description="The contact's brand, for a draft (or X-Rechat-Brand)")] = None

    @model_validator(mode="after")
    def _campaign_or_body(self) -> PreviewIn:
        if self.campaign is not None and (self.subject, self.html, self.text) != (None, None, None):
            raise ValueError("give campaign or subject/html/text, not both")
        if self.campaign is None and self.subject is None:
            raise ValueError("subject is required without campaign")
        return self


@closed
class PreviewOut(TypedDict):
    """What the recipient would get (links not yet rewritten for tracking)."""

    subject: str
    html: str | None
    text: str
    to: Annotated[str, Field(description="The address the preview was rendered for")]


USER = text(
    """
    SELECT email, first_name, last_name, display_name, phone_number FROM users
    WHERE id = :id AND deleted_at IS NULL
    """
)
CONTACT = text(
    """
    SELECT emails[1] AS email, first_name, last_name FROM contacts
    WHERE id = :id AND brand = :brand AND deleted_at IS NULL
    """
)


async def preview(
    session: AsyncSession, renderer: RenderPool, body: PreviewIn, *, user: uuid.UUID, brand: uuid.UUID | None
) -> PreviewOut:
    conn = await driver_connection(session)
    if body.campaign is not None:
        stored = await reads.visible_campaign(conn, body.campaign, user)
        subject, html, text_, sender_id, brand = (
            stored.subject or "",
            stored.html,
            stored.text,
            stored.from_,
            stored.brand,
        )
    else:
        subject, html, text_, sender_id = body.subject or "", body.html, body.text, user
    await check_templates(subject, html, text_, renderer)
    sender = (await session.execute(USER, {"id": sender_id})).one()
    context: dict[str, Any] = {**SAMPLE_CONTEXT, "sender": sender_values(**sender._mapping)}
    if body.contact is not None:
        if brand is None:
            raise BadRequest("is required with contact (in the body or the X-Rechat-Brand header)", field="brand")
        await reads.require_member(conn, user, brand)
        contact = (await session.execute(CONTACT, {"id": body.contact, "brand": brand})).first()
        if contact is None or not contact.email:
            raise NotFound("no such contact with an address in this brand", field="contact")
        context["recipient"] = recipient_values(**contact._mapping, display_name=None)
    try:
        (message,) = await renderer.render(CampaignTemplates(subject, html, text_), [context])
    except TemplateError as exc:
        # Passed the check on the sample but not with this contact's values (a bound, a type error).
        raise BadRequest(str(exc).removeprefix(f"{exc.field}: "), field=exc.field or "html") from None
    return {"subject": message.subject, "html": message.html, "text": message.text, "to": context["recipient"]["email"]}
