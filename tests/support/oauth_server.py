"""A local HTTP server speaking Google's and Microsoft's OAuth 2.0 token endpoints and profile reads.

    with oauth_server() as provider:
        settings = provider.settings(base_settings)   # client ids, secrets and URLs pointing here
        code = provider.issue_code("google", scopes=["mail.send"], redirect_uri=..., code_challenge=...)
        ...
        assert provider.refreshes("google") == 1

Token endpoints (``POST /google/token``, ``POST /microsoft/token``) take the form-encoded requests of
RFC 6749 as both providers document them: ``grant_type=authorization_code`` (client id and secret,
code, redirect_uri, the PKCE S256 ``code_verifier``) and ``grant_type=refresh_token``. Errors are
RFC 6749 bodies: ``{"error": "invalid_grant", "error_description": ...}`` with 400, ``invalid_client``
with 401. Google answers no new refresh token on refresh; Microsoft rotates it. Granted scopes come
back as Google writes them (full URLs) and as Microsoft does (Graph resource URIs).
Profile reads: Gmail ``GET /gmail/v1/users/me/profile`` and Graph ``GET /v1.0/me``, Bearer-checked.
Starlette + uvicorn run in a thread with their own event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailroom.config import Settings
from mailroom.transports.oauth import GOOGLE_SCOPES, MICROSOFT_ALWAYS, MICROSOFT_SCOPES
from tests.support.http_server import serve_routes

GRAPH = "https://graph.microsoft.com/"
# The scopes Gmail's users.getProfile accepts (gmail.send alone is not one of them).
GMAIL_PROFILE_SCOPES = {
    "https://mail.google.com/",
    *(f"https://www.googleapis.com/auth/gmail.{name}" for name in ("modify", "compose", "readonly", "metadata")),
}


@dataclass
class TokenRequest:
    kind: str
    form: dict[str, str]
    status: int = 0


@dataclass
class _Code:
    kind: str
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    email: str


@dataclass
class _Refresh:
    kind: str
    email: str
    scope: str
    revoked: bool = False


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str]
    delay: float


@dataclass
class FakeOAuth:
    clients: dict[str, tuple[str, str]]
    url: str = ""
    expires_in: int = 3599
    # Microsoft's /me answers mail null for accounts without an Exchange mailbox address.
    graph_mail: bool = True
    requests: list[TokenRequest] = field(default_factory=list)
    profile_reads: list[str] = field(default_factory=list)
    _codes: dict[str, _Code] = field(default_factory=dict)
    refresh_tokens: dict[str, _Refresh] = field(default_factory=dict)
    access_tokens: dict[str, str] = field(default_factory=dict)  # issued token -> mailbox address
    _access_scopes: dict[str, str] = field(default_factory=dict)  # issued token -> granted scope string
    _failures: deque[_Failure] = field(default_factory=deque)
    # Answering a refresh is slow when asked (``refresh_delay``), so concurrent refreshes overlap.
    refresh_delay: float = 0.0

    def settings(self, base: Settings) -> Settings:
        """``base`` with both OAuth clients configured and every provider URL pointing here."""
        return base.model_copy(
            update={
                "google_client_id": self.clients["google"][0],
                "google_client_secret": self.clients["google"][1],
                "google_auth_url": f"{self.url}/google/auth",
                "google_token_url": f"{self.url}/google/token",
                "google_api_url": self.url,
                "microsoft_client_id": self.clients["microsoft"][0],
                "microsoft_client_secret": self.clients["microsoft"][1],
                "microsoft_auth_url": f"{self.url}/microsoft/auth",
                "microsoft_token_url": f"{self.url}/microsoft/token",
                "microsoft_graph_url": self.url,
            }
        )

    def granted_scope(self, kind: str, scopes: Sequence[str]) -> str:
        """The ``scope`` string the provider answers for our scopes, as it writes it."""
        if kind == "google":
            return " ".join(dict.fromkeys(name for s in scopes for name in GOOGLE_SCOPES[s]))
        names = [name for s in scopes for name in MICROSOFT_SCOPES[s]] + list(MICROSOFT_ALWAYS)
        return " ".join(dict.fromkeys(n if n == "offline_access" else GRAPH + n for n in names))

    def issue_code(
        self, kind: str, *, scopes: Sequence[str], redirect_uri: str, code_challenge: str, email: str
    ) -> str:
        """The authorization code the consent screen would send back for these scopes (ours)."""
        code = f"{kind[0]}code-{secrets.token_urlsafe(16)}"
        client_id = self.clients[kind][0]
        self._codes[code] = _Code(
            kind, client_id, redirect_uri, code_challenge, self.granted_scope(kind, scopes), email
        )
        return code

    def grant(self, kind: str, *, email: str, scopes: Sequence[str]) -> tuple[str, str]:
        """(access token, refresh token) as if a consent had been redeemed: for arranging a credential."""
        return self._tokens(kind, email, self.granted_scope(kind, scopes), new_refresh=True)[:2]

    def revoke(self, refresh_token: str) -> None:
        """The user removed the app's access (or the token expired): refreshing now answers invalid_grant."""
        self.refresh_tokens[refresh_token].revoked = True

    def refreshes(self, kind: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if r.form.get("grant_type") == "refresh_token" and kind in (None, r.kind) and r.status == 200
        )

    def fail_next(
        self, count: int, status: int, body: Any = None, headers: dict[str, str] | None = None, *, delay: float = 0.0
    ) -> None:
        """Answer the next ``count`` token requests with ``status`` and JSON ``body``."""
        body = body if body is not None else {"error": "server_error", "error_description": f"error {status}"}
        self._failures.extend(_Failure(status, body, headers or {}, delay) for _ in range(count))

    def _tokens(self, kind: str, email: str, scope: str, *, new_refresh: bool) -> tuple[str, str, str]:
        access = f"{'ya29' if kind == 'google' else 'EwB'}.{secrets.token_urlsafe(24)}"
        self.access_tokens[access] = email
        self._access_scopes[access] = scope
        refresh = f"1//{secrets.token_urlsafe(24)}" if new_refresh else ""
        if refresh:
            self.refresh_tokens[refresh] = _Refresh(kind, email, scope)
        return access, refresh, scope

    async def token(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in self.clients:
            return JSONResponse({"error": "not_found"}, 404)
        form = {k: str(v) for k, v in (await request.form()).items()}
        recorded = TokenRequest(kind, form)
        self.requests.append(recorded)
        if self._failures:
            failure = self._failures.popleft()
            await asyncio.sleep(failure.delay)
            response: Response = JSONResponse(failure.body, failure.status, headers=failure.headers)
        else:
            if form.get("grant_type") == "refresh_token" and self.refresh_delay:
                await asyncio.sleep(self.refresh_delay)
            response = self._answer(kind, form)
        recorded.status = response.status_code
        return response

    def _answer(self, kind: str, form: dict[str, str]) -> Response:
        client_id, secret = self.clients[kind]
        if _missing(form, "client_id", "client_secret", "grant_type"):
            return _error(400, "invalid_request", "Missing required parameter")
        if form["client_id"] != client_id or form["client_secret"] != secret:
            return _error(401, "invalid_client", "The OAuth client was not found or the secret is wrong.")
        grant_type = form["grant_type"]
        if grant_type == "authorization_code":
            return self._redeem(kind, form)
        if grant_type == "refresh_token":
            held = self.refresh_tokens.get(form.get("refresh_token", ""))
            if held is None or held.revoked or held.kind != kind:
                return _error(400, "invalid_grant", "Token has been expired or revoked.")
            # Microsoft rotates refresh tokens; Google keeps the one it gave.
            access, refresh, scope = self._tokens(kind, held.email, held.scope, new_refresh=kind == "microsoft")
            return self._token_body(kind, access, refresh or None, scope, held.email)
        return _error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _redeem(self, kind: str, form: dict[str, str]) -> Response:
        if _missing(form, "code", "redirect_uri", "code_verifier"):
            return _error(400, "invalid_request", "Missing code, redirect_uri or code_verifier")
        # A code is redeemed once, whatever the outcome, as both providers do.
        code = self._codes.pop(form["code"], None)
        if code is None or code.kind != kind:
            return _error(400, "invalid_grant", "Malformed auth code.")
        if form["redirect_uri"] != code.redirect_uri:
            return _error(400, "redirect_uri_mismatch" if kind == "google" else "invalid_grant", "Bad redirect_uri")
        digest = hashlib.sha256(form["code_verifier"].encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != code.challenge:
            return _error(400, "invalid_grant", "Invalid code verifier.")
        access, refresh, scope = self._tokens(kind, code.email, code.scope, new_refresh=True)
        return self._token_body(kind, access, refresh, scope, code.email)

    def _token_body(self, kind: str, access: str, refresh: str | None, scope: str, email: str) -> Response:
        body: dict[str, Any] = {
            "access_token": access,
            "expires_in": self.expires_in,
            "scope": scope,
            "token_type": "Bearer",
        }
        if refresh:
            body["refresh_token"] = refresh
        if "openid" in scope.split():
            body["id_token"] = self._id_token(kind, email)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def _id_token(self, kind: str, email: str) -> str:
        """An OpenID Connect ID token as Google issues it (the signature is not checked by its reader,
        which has it straight from the token endpoint over TLS)."""
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": self.clients[kind][0],
            "sub": "110169484474386276334",
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        parts = [{"alg": "RS256", "kid": "1e9gdk7", "typ": "JWT"}, claims]
        encoded = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode() for p in parts]
        return ".".join([*encoded, secrets.token_urlsafe(256)])

    def _bearer(self, request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return self.access_tokens.get(token) if scheme == "Bearer" else None

    async def gmail_profile(self, request: Request) -> Response:
        email = self._bearer(request)
        self.profile_reads.append("google")
        if email is None:
            error = {
                "code": 401,
                "message": "Request had invalid authentication credentials.",
                "status": "UNAUTHENTICATED",
            }
            return JSONResponse({"error": error}, 401)
        token = request.headers["authorization"].partition(" ")[2]
        if not set(self._access_scopes[token].split()) & GMAIL_PROFILE_SCOPES:
            message = "Request had insufficient authentication scopes."
            error = {"code": 403, "message": message, "status": "PERMISSION_DENIED"}
            return JSONResponse({"error": error}, 403)
        return JSONResponse({"emailAddress": email, "messagesTotal": 12, "threadsTotal": 9, "historyId": "4242"})

    async def graph_me(self, request: Request) -> Response:
        email = self._bearer(request)
        self.profile_reads.append("microsoft")
        if email is None:
            error = {"code": "InvalidAuthenticationToken", "message": "Access token is empty."}
            return JSONResponse({"error": error}, 401)
        return JSONResponse(
            {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
                "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
                "displayName": "Ann Lee",
                "mail": email if self.graph_mail else None,
                "userPrincipalName": email,
            }
        )


def _missing(form: dict[str, str], *names: str) -> bool:
    return any(not form.get(name) for name in names)


def _error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status)


@contextmanager
def oauth_server() -> Iterator[FakeOAuth]:
    """Serve a fake Google and Microsoft on a free loopback port for the duration of the block."""
    fake = FakeOAuth(clients={"google": ("g-client.apps", "g-secret"), "microsoft": ("ms-client-id", "ms-secret")})
    routes = [
        Route("/{kind:str}/token", fake.token, methods=["POST"]),
        Route("/gmail/v1/users/me/profile", fake.gmail_profile, methods=["GET"]),
        Route("/v1.0/me", fake.graph_me, methods=["GET"]),
    ]
    with serve_routes(routes, name="OAuth") as url:
        fake.url = url
        yield fake
