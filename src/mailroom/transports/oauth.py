"""OAuth 2.0 with Google and Microsoft: the consent URL, the code exchange, token refresh, and the
mailbox address a token acts for. HTTP only: storing what it answers is the callers' business.

Both providers take the same authorization-code flow with PKCE (S256) and a confidential client
(``client_secret`` in the form body), and answer RFC 6749 token responses and errors. What differs
is the scope names (mapped here from ours, and back from the granted ``scope`` string) and the
parameters that make Google hand out a refresh token (``access_type=offline``, ``prompt=consent``;
Microsoft does with the ``offline_access`` scope).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import httpx

from mailroom.config import Settings
from mailroom.transports.base import TransientSendError
from mailroom.transports.responses import json_object, retry_after

Kind = Literal["google", "microsoft"]
LABELS: dict[Kind, str] = {"google": "Google", "microsoft": "Microsoft"}

# Our scope names, in the order the API documents them.
OUR_SCOPES = ("profile", "contacts", "mail.read", "mail.send", "mail.modify", "calendar")

_GOOGLE = "https://www.googleapis.com/auth/"
GOOGLE_SCOPES: dict[str, tuple[str, ...]] = {
    "profile": ("openid", _GOOGLE + "userinfo.profile", _GOOGLE + "userinfo.email"),
    "contacts": (_GOOGLE + "contacts.readonly",),
    "mail.read": (_GOOGLE + "gmail.readonly",),
    "mail.send": (_GOOGLE + "gmail.send",),
    "mail.modify": (_GOOGLE + "gmail.modify",),
    "calendar": (_GOOGLE + "calendar",),
}
MICROSOFT_SCOPES: dict[str, tuple[str, ...]] = {
    "profile": ("User.Read",),
    "contacts": ("Contacts.Read",),
    "mail.read": ("Mail.Read",),
    "mail.send": ("Mail.Send",),
    "mail.modify": ("Mail.ReadWrite",),
    "calendar": ("Calendars.ReadWrite",),
}
# Without it Microsoft answers no refresh token, and the mailbox stops working after an hour.
MICROSOFT_ALWAYS = ("offline_access",)

# Granted provider scope -> the scopes of ours it gives. Scopes that include others give those too:
# modifying mail includes reading it, and Google's full-mailbox scope includes everything mail.
_GOOGLE_GIVES: dict[str, tuple[str, ...]] = {
    "openid": (),
    "email": ("profile",),
    "profile": ("profile",),
    _GOOGLE + "userinfo.email": ("profile",),
    _GOOGLE + "userinfo.profile": ("profile",),
    _GOOGLE + "contacts.readonly": ("contacts",),
    _GOOGLE + "contacts": ("contacts",),
    _GOOGLE + "gmail.readonly": ("mail.read",),
    _GOOGLE + "gmail.send": ("mail.send",),
    _GOOGLE + "gmail.modify": ("mail.modify", "mail.read"),
    "https://mail.google.com/": ("mail.read", "mail.send", "mail.modify"),
    _GOOGLE + "calendar": ("calendar",),
}
_MICROSOFT_GIVES: dict[str, tuple[str, ...]] = {
    "user.read": ("profile",),
    "contacts.read": ("contacts",),
    "contacts.readwrite": ("contacts",),
    "mail.read": ("mail.read",),
    "mail.send": ("mail.send",),
    "mail.readwrite": ("mail.modify", "mail.read"),
    "calendars.readwrite": ("calendar",),
}
_GRAPH_RESOURCE = "https://graph.microsoft.com/"


class OAuthError(Exception):
    """The provider refused a token request (RFC 6749 section 5.2 ``error``), or answered nonsense."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


class InvalidGrant(OAuthError):
    """The code or refresh token is expired, used, revoked or not ours: the user must connect again."""


class NotConfigured(ValueError):
    """The server has no OAuth client for the provider; ``setting`` names what to set."""

    def __init__(self, setting: str, label: str) -> None:
        super().__init__(f"{setting} is not set: {label} mailboxes cannot be connected on this server")
        self.setting = setting


def provider_scopes(kind: Kind, scopes: Iterable[str]) -> list[str]:
    """The provider's scope names for ours (unknown names raise KeyError), without repeats."""
    table = GOOGLE_SCOPES if kind == "google" else MICROSOFT_SCOPES
    names = [name for scope in scopes for name in table[scope]]
    if kind == "microsoft":
        names += MICROSOFT_ALWAYS
    return list(dict.fromkeys(names))


def scope_summary(kind: Kind, granted: str) -> list[str]:
    """Our scopes a granted ``scope`` string (space-separated) gives, in our order."""
    ours: set[str] = set()
    for name in granted.split():
        if kind == "google":
            ours.update(_GOOGLE_GIVES.get(name, ()))
        else:
            # Graph scopes come back bare or as full URIs, in any case.
            ours.update(_MICROSOFT_GIVES.get(name.removeprefix(_GRAPH_RESOURCE).lower(), ()))
    return [scope for scope in OUR_SCOPES if scope in ours]


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636: 86 characters of 64 random bytes."""
    verifier = secrets.token_urlsafe(64)
    return verifier, code_challenge(verifier)


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Grant:
    """A token response. ``scopes`` are ours, None when the provider did not say (refreshes may not).
    ``email``: the verified address Google's ID token names (asked for with the profile scope)."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime
    scopes: list[str] | None
    email: str | None = None

    def __repr__(self) -> str:  # never show the tokens
        return f"Grant(expires_at={self.expires_at.isoformat()}, scopes={self.scopes})"


@dataclass(frozen=True)
class OAuthClient:
    kind: Kind
    client_id: str
    client_secret: str
    auth_url: str
    token_url: str

    def __repr__(self) -> str:  # never show the secret
        return f"OAuthClient({self.kind!r}, {self.client_id!r})"

    @classmethod
    def from_settings(cls, settings: Settings, kind: Kind) -> OAuthClient:
        """The server's OAuth client for the provider; NotConfigured when its id or secret is unset."""
        for setting in (f"{kind}_client_id", f"{kind}_client_secret"):
            if not getattr(settings, setting):
                raise NotConfigured(setting, LABELS[kind])
        if kind == "google":
            return cls(
                kind,
                settings.google_client_id or "",
                settings.google_client_secret or "",
                settings.google_auth_url,
                settings.google_token_url,
            )
        return cls(
            kind,
            settings.microsoft_client_id or "",
            settings.microsoft_client_secret or "",
            settings.microsoft_auth_url,
            settings.microsoft_token_url,
        )

    def consent_url(self, *, state: str, code_challenge: str, scopes: Sequence[str], redirect_uri: str) -> str:
        """Where to send the user's browser to grant ``scopes`` (ours)."""
        params = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(provider_scopes(self.kind, scopes)),
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if self.kind == "google":
            # offline: a refresh token; consent: a new one even when the user connected before
            # (Google otherwise answers none); include_granted_scopes: keep what was granted earlier.
            params |= {"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"}
        else:
            params["response_mode"] = "query"
        separator = "&" if "?" in self.auth_url else "?"
        return self.auth_url + separator + urlencode(params)

    async def exchange(self, code: str, *, verifier: str, redirect_uri: str, client: httpx.AsyncClient) -> Grant:
        """The tokens for an authorization code (InvalidGrant: used, expired, or the verifier does not match)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        return await self._token_request(form, client)

    async def refresh(self, refresh_token: str, *, client: httpx.AsyncClient) -> Grant:
        """A new access token (and, from Microsoft, a new refresh token). InvalidGrant: access was revoked."""
        return await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token}, client)

    async def _token_request(self, form: dict[str, str], client: httpx.AsyncClient) -> Grant:
        form = {**form, "client_id": self.client_id, "client_secret": self.client_secret}
        label = LABELS[self.kind]
        response = await _call(client, "POST", self.token_url, label, data=form, headers={"Accept": "application/json"})
        body = json_object(response)
        if response.status_code != 200:
            error = str(body.get("error") or f"HTTP {response.status_code}")
            description = str(body.get("error_description") or "")[:300]
            raise (InvalidGrant if error == "invalid_grant" else OAuthError)(error, description)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise OAuthError("invalid_response", f"{label} answered no access_token")
        refresh = body.get("refresh_token")
        expires_in = body.get("expires_in")
        try:
            seconds = float(expires_in) if expires_in is not None else 3600.0
        except (TypeError, ValueError):
            seconds = 3600.0
        scope = body.get("scope")
        return Grant(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=datetime.now(UTC) + timedelta(seconds=seconds),
            scopes=scope_summary(self.kind, scope) if isinstance(scope, str) else None,
            email=_id_token_email(body.get("id_token")) if self.kind == "google" else None,
        )


async def account_address(kind: Kind, *, api_url: str, access_token: str, client: httpx.AsyncClient) -> str:
    """The address of the mailbox a token acts for: Gmail's profile, or Graph's ``/me``."""
    base = api_url.rstrip("/")
    url = f"{base}/gmail/v1/users/me/profile" if kind == "google" else f"{base}/v1.0/me"
    label = "Gmail" if kind == "google" else "Microsoft Graph"
    response = await _call(client, "GET", url, label, headers={"Authorization": f"Bearer {access_token}"})
    body = json_object(response)
    if response.status_code != 200:
        raise OAuthError("profile_unreadable", f"{label} answered {response.status_code} for the mailbox profile")
    address = body.get("emailAddress") if kind == "google" else body.get("mail") or body.get("userPrincipalName")
    if not isinstance(address, str) or "@" not in address:
        raise OAuthError("profile_unreadable", f"{label} answered no mailbox address")
    return address


def _id_token_email(id_token: object) -> str | None:
    """The verified ``email`` claim of an OpenID Connect ID token, if any.

    The signature is not checked: the token came straight from the provider's token endpoint over
    TLS, which OpenID Connect Core (3.1.3.7) accepts in place of it.
    """
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict) or claims.get("email_verified") is not True:
        return None
    email = claims.get("email")
    return email if isinstance(email, str) and "@" in email else None


async def _call(client: httpx.AsyncClient, method: str, url: str, label: str, **kw: Any) -> httpx.Response:
    """One request; unreachable, rate limited (429) and failing (5xx) providers raise TransientSendError."""
    try:
        response = await client.request(method, url, **kw)
    except httpx.TimeoutException as exc:
        raise TransientSendError(f"{label} did not answer in time ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise TransientSendError(f"cannot reach {label}: {type(exc).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientSendError(
            f"{label} answered {response.status_code}",
            retry_after=retry_after(response),
        )
    return response
