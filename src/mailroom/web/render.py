"""Templates shipped in the package, rendered with autoescape: whatever a user typed is shown as text."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

from mailroom.campaigns.listing import progress, rate
from mailroom.crypto import SecretBox
from mailroom.web.guard import CSRF_FIELD, csrf_token, guarded

# Autoescape everything, not only *.html: no template can forget it. StrictUndefined: a misspelt name
# fails a test instead of rendering as nothing.
templates = Environment(
    loader=PackageLoader("mailroom.web", "templates"), autoescape=True, undefined=StrictUndefined, enable_async=False
)


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction:.1%}"


templates.filters["when"] = when
templates.filters["percent"] = percent


def render(template: str, box: SecretBox, anchor: str | None, *, status: int = 200, **context: Any) -> HTMLResponse:
    """The page, with the CSRF token its forms carry (made from ``anchor``) and the workspace's headers."""
    context.setdefault("user", None)
    page = templates.get_template(template).render(
        csrf_field=CSRF_FIELD, csrf=csrf_token(box, anchor) if anchor else "", **context
    )
    return guarded(HTMLResponse(page, status_code=status))


def campaign_rows(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """What the campaign list shows of each campaign row ``reads.brand_campaigns`` returns."""
    return [
        {
            "id": row.id,
            "subject": row.subject,
            "status": progress(row),
            "due_at": row.due_at,
            "executed_at": row.executed_at,
            "recipients": row.recipients_count,
            # Rates of the messages sent, as GET /emails/:id/stats counts them.
            "delivered": rate(row.delivered, row.sent),
            "opened": rate(row.opened, row.sent),
            "clicked": rate(row.clicked, row.sent),
        }
        for row in rows
    ]
