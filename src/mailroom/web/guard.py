"""What every workspace response carries and every workspace form must bring back.

Each page gets a Content-Security-Policy that lets in nothing but mailroom's own files (no inline script or
style, no other origin) and a Referrer-Policy that keeps a sign-in link's token out of any Referer header.
Each form carries a CSRF token: an HMAC of the browser's session id, or before sign-in of a random value in
a cookie of its own. A cross-site page can make a browser post a form but cannot read either cookie, so it
cannot make the token; a POST without the right one changes nothing.
"""

from __future__ import annotations

import secrets
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from mailroom.config import Settings
from mailroom.crypto import SecretBox

SESSION_COOKIE = "mailroom_session"
# The CSRF anchor of the forms shown before sign-in (the sign-in form and the link's confirmation).
FORM_COOKIE = "mailroom_form"
CSRF_FIELD = "csrf"
CSRF_PURPOSE = "web-csrf"
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
R = TypeVar("R", bound=Response)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Pages show one person's data: no shared cache keeps them, and Back does not show them after sign-out.
    "Cache-Control": "no-store",
}


def secure_cookies(settings: Settings) -> bool:
    """Cookies are sent over HTTPS only when mailroom is reached over HTTPS; over plain HTTP (a laptop,
    a test) a Secure cookie would never come back."""
    return settings.public_url.lower().startswith("https://")


def guarded(response: R) -> R:
    response.headers.update(HEADERS)
    return response


def set_cookie(response: Response, settings: Settings, name: str, value: str, *, max_age: int | None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="lax", secure=secure_cookies(settings)
    )


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=secure_cookies(settings))


def csrf_anchor(request: Request) -> str | None:
    """The secret a form's token is made from: the session id, or before sign-in the form cookie."""
    return request.cookies.get(SESSION_COOKIE) or request.cookies.get(FORM_COOKIE)


def csrf_token(box: SecretBox, anchor: str) -> str:
    return box.sign(anchor, purpose=CSRF_PURPOSE)


def csrf_valid(box: SecretBox, request: Request, token: object) -> bool:
    anchor = csrf_anchor(request)
    return anchor is not None and isinstance(token, str) and box.verify(anchor, token, purpose=CSRF_PURPOSE)


def new_form_anchor() -> str:
    return secrets.token_urlsafe(32)
