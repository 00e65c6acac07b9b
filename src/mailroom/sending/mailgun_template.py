"""Turning rendered per-recipient messages into one Mailgun call with recipient variables.

What is the same for everyone is sent once; what differs (a personalised subject or body, the
unsubscribe link) travels as recipient-variables and is substituted by Mailgun per recipient. The
campaign's own Jinja templates stay ours: Mailgun only sees finished text, never template logic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailroom.sending.attachments import Parts
from mailroom.sending.render import RenderedMessage
from mailroom.transports.mailgun import TemplateRecipient, TemplateSend


def template_send(
    from_header: str,
    rows: Sequence[Any],
    rendered: Sequence[RenderedMessage],
    *,
    headers: dict[str, str],
    unsubscribe: Sequence[str],
    tags: Sequence[str],
    parts: Parts,
) -> TemplateSend:
    variables: list[dict[str, str]] = [{"unsubscribe": url} for url in unsubscribe]
    fields: dict[str, str | None] = {}
    for name in ("subject", "html", "text"):
        values = [getattr(message, name) for message in rendered]
        if len(set(values)) == 1:
            fields[name] = values[0]
        else:
            fields[name] = f"%recipient.{name}%"
            for per_recipient, value in zip(variables, values, strict=True):
                per_recipient[name] = value or ""
    return TemplateSend(
        from_addr=from_header,
        subject=fields["subject"] or "",
        html=fields["html"],
        text=fields["text"],
        recipients=[
            TemplateRecipient(key=str(row.id), address=row.email_address, variables=values)
            for row, values in zip(rows, variables, strict=True)
        ],
        headers={
            **headers,
            "List-Unsubscribe": "<%recipient.unsubscribe%>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        tags=tags,
        inline=parts.inline,
        attachments=parts.attached,
    )
