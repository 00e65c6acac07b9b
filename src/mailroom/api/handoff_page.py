"""The page mailroom's OAuth callback answers a browser with.

It hands the provider's answer to the window that opened the consent screen with ``postMessage``,
addressed to the configured app origin only: a page opened by anybody else (a consent link passed to
another person) delivers it nowhere, since the browser drops a message whose target origin is not the
opener's. The page runs one fixed script, allowed by its hash, and loads nothing.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

import orjson
from fastapi.responses import HTMLResponse

from mailroom.config import Settings
from mailroom.transports.oauth import LABELS, Kind

SCRIPT = (
    '(function(){var el=document.getElementById("handoff");var data=JSON.parse(el.textContent);'
    "if(window.opener&&data.origin){window.opener.postMessage(data.message,data.origin);}})();"
)
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; script-src 'sha256-{SCRIPT_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    # The code is in this page's address: it must not leave in a Referer, nor stay in a cache.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
MESSAGE_TYPE = "mailroom:oauth"


def _json_in_script(value: Any) -> str:
    # Inside <script type="application/json"> only "</" can end the element; escaping <, > and & keeps
    # any text a provider sent back inert.
    text = orjson.dumps(value).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def handoff_page(
    settings: Settings, kind: Kind, message: dict[str, Any], notice: str | None, *, status_code: int = 200
) -> HTMLResponse:
    """``message`` goes to the opener at the app origin; ``notice`` is what the person reads (None: the
    words for a browser that is not signed in as the user who asked to connect)."""
    label = LABELS[kind]
    if notice is None:
        notice = (
            f"Returning to the app that asked to connect this {label} mailbox. If nothing happens, nothing was "
            "connected: start again from your own mailroom account."
            if settings.app_origin
            else f"Nothing was connected: this browser is not signed in to mailroom as the person who asked to "
            f"connect a {label} mailbox. Sign in and start again from your own account."
        )
    payload = {"origin": settings.app_origin, "message": {"type": MESSAGE_TYPE, "provider": kind, **message}}
    page = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>Connect {html.escape(label)}</title>"
        f"<p>{html.escape(notice)}</p>"
        f'<script type="application/json" id="handoff">{_json_in_script(payload)}</script>'
        f"<script>{SCRIPT}</script></html>"
    )
    return HTMLResponse(page, status_code=status_code, headers=HEADERS)
