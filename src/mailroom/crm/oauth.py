"""Connecting a Gmail or Outlook mailbox: the consent URL, and the callback that stores the credential.

The browser leaves with a ``state`` that is a sealed token naming a nonce, and comes back with it and
an authorization code. The nonce's row (``oauth_states``) holds who connects, for which brand, and the
PKCE verifier, encrypted: the verifier never travels, so a code intercepted on its way back is useless
without our database. The row is deleted as it is read, so a state works once.

Whoever holds the consent link can approve it with any account, so the state alone proves nothing about
who comes back (RFC 6749, section 10.12). The code is exchanged only for a request authenticated as the
user who asked for the link (their API token, or their signed-in browser); a state presented by anybody
else is spent and refused, and the provider is never asked for a token.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.crm import credentials
from mailroom.crm.membership import require_member
from mailroom.crypto import InvalidToken, SecretBox
from mailroom.errors import BadGateway, BadRequest
from mailroom.transports.base import TransientSendError
from mailroom.transports.oauth import (
    LABELS,
    Grant,
    InvalidGrant,
    NotConfigured,
    OAuthClient,
    OAuthError,
    account_address,
    pkce_pair,
)

STATE_PURPOSE = "oauth-state"
# Long enough to read a consent screen and sign in, short enough that a leaked URL soon goes stale.
STATE_TTL = timedelta(minutes=10)

SWEEP_EXPIRED = text("DELETE FROM oauth_states WHERE expires_at < now()")
INSERT_STATE = text(
    """
    INSERT INTO oauth_states (nonce, "user", brand, kind, scopes, verifier, expires_at)
    VALUES (:nonce, :user, :brand, :kind, :scopes, :verifier, :expires_at)
    """
)
CONSUME_STATE = text(
    """
    DELETE FROM oauth_states WHERE nonce = :nonce AND kind = :kind AND expires_at > now()
    RETURNING "user", brand, scopes, verifier
    """
)


def client_for(settings: Settings, kind: credentials.Kind) -> OAuthClient:
    try:
        return OAuthClient.from_settings(settings, kind)
    except NotConfigured as exc:
        raise BadRequest(f"is not set: {LABELS[kind]} mailboxes cannot be connected", field=exc.setting) from None


def redirect_uri(settings: Settings, kind: credentials.Kind) -> str:
    """Where the provider sends the browser back: an app's own page when configured, else ours."""
    configured = settings.google_redirect_url if kind == "google" else settings.microsoft_redirect_url
    return configured or f"{settings.public_url.rstrip('/')}/users/self/{kind}/callback"


def api_url(settings: Settings, kind: credentials.Kind) -> str:
    return settings.google_api_url if kind == "google" else settings.microsoft_graph_url


async def _address(settings: Settings, http: httpx.AsyncClient, kind: credentials.Kind, grant: Grant) -> str:
    """The mailbox's address from its profile; for a Gmail grant without a scope that reads the
    profile (gmail.send alone), the verified address of Google's ID token."""
    try:
        url = api_url(settings, kind)
        return await account_address(kind, api_url=url, access_token=grant.access_token, client=http)
    except OAuthError:
        if grant.email is None:
            raise
        return grant.email


async def start_connect(
    session: AsyncSession,
    box: SecretBox,
    settings: Settings,
    *,
    user: uuid.UUID,
    brand: uuid.UUID,
    kind: credentials.Kind,
    scopes: Sequence[str],
    from_workspace: bool = False,
) -> str:
    """The consent URL to send the user's browser to. ``scopes`` are ours, already validated. Started from
    the workspace, the state says so, and the browser is brought back to the brand's mailboxes page."""
    oauth = client_for(settings, kind)
    await require_member(session, user, brand, field="X-Rechat-Brand")
    # The callback reads the mailbox's address, which needs the profile scope.
    wanted = list(dict.fromkeys(["profile", *scopes]))
    nonce = secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair()
    await session.execute(SWEEP_EXPIRED)
    await session.execute(
        INSERT_STATE,
        {
            "nonce": nonce,
            "user": user,
            "brand": brand,
            "kind": kind,
            "scopes": wanted,
            "verifier": box.encrypt(verifier),
            "expires_at": datetime.now(UTC) + STATE_TTL,
        },
    )
    sealed: dict[str, str] = {"n": nonce, "k": kind}
    if from_workspace:
        # Sealed, so no one can make an API flow's callback redirect, nor point it at another brand.
        sealed["w"] = str(brand)
    state = box.seal(STATE_PURPOSE, sealed, ttl=STATE_TTL.total_seconds())
    return oauth.consent_url(
        state=state, code_challenge=challenge, scopes=wanted, redirect_uri=redirect_uri(settings, kind)
    )


@dataclass(frozen=True)
class PendingConnect:
    """What a spent state named: who asked for the consent link, for which brand, and the PKCE verifier."""

    user: uuid.UUID
    brand: uuid.UUID
    scopes: list[str]
    verifier: str
    # Started from the workspace's mailboxes page, which the browser returns to.
    from_workspace: bool = False


def workspace_brand(box: SecretBox, state: str | None) -> uuid.UUID | None:
    """The brand whose workspace page started the consent ``state`` was made for, without spending it; None
    for a state made for the API, or one that is not ours."""
    try:
        sealed = box.unseal(STATE_PURPOSE, state or "")
        return uuid.UUID(sealed["w"]) if isinstance(sealed.get("w"), str) else None
    except (InvalidToken, ValueError):
        return None


async def take_state(session: AsyncSession, box: SecretBox, *, kind: credentials.Kind, state: str) -> PendingConnect:
    """Spends ``state``: whatever happens next, it cannot be presented again. The caller commits this
    on its own, so that a refusal after it (another user, a code the provider refuses) still spends it."""
    try:
        sealed = box.unseal(STATE_PURPOSE, state)
    except InvalidToken:
        raise BadRequest("is not valid or has expired: connect the mailbox again", field="state") from None
    nonce = sealed.get("n")
    if sealed.get("k") != kind or not isinstance(nonce, str):
        raise BadRequest(f"was not made for a {LABELS[kind]} connection", field="state")
    row = (await session.execute(CONSUME_STATE, {"nonce": nonce, "kind": kind})).one_or_none()
    if row is None:
        raise BadRequest("was used already or has expired: connect the mailbox again", field="state")
    return PendingConnect(
        user=row.user,
        brand=row.brand,
        scopes=list(row.scopes),
        verifier=box.decrypt(bytes(row.verifier)) or "",
        from_workspace=sealed.get("w") == str(row.brand),
    )


async def finish_connect(
    session: AsyncSession,
    box: SecretBox,
    settings: Settings,
    http: httpx.AsyncClient,
    *,
    kind: credentials.Kind,
    code: str,
    pending: PendingConnect,
    user: uuid.UUID,
) -> credentials.Credential:
    """Redeems the code for ``user``, who must be the one who asked for the consent link; the stored
    credential."""
    oauth = client_for(settings, kind)
    if pending.user != user:
        # Somebody else's consent link: the account behind this code is not the caller's to connect.
        raise BadRequest("was issued to another user: connect the mailbox from your own account", field="state")
    # Membership may have ended while the consent screen was open.
    await require_member(session, pending.user, pending.brand, field="state")
    label = LABELS[kind]
    try:
        back_to = redirect_uri(settings, kind)
        grant = await oauth.exchange(code, verifier=pending.verifier, redirect_uri=back_to, client=http)
        address = await _address(settings, http, kind, grant)
    except InvalidGrant:
        raise BadRequest(f"{label} did not accept this code: connect the mailbox again", field="code") from None
    except OAuthError as exc:
        raise BadRequest(f"{label} refused the connection ({exc.error})", field="code") from None
    except TransientSendError as exc:
        raise BadGateway(f"{exc.reason}; connect the mailbox again later", field="code") from None
    # The user may have unticked scopes on the consent screen: record what was granted, not asked.
    granted = grant.scopes if grant.scopes is not None else pending.scopes
    if not granted:
        raise BadRequest(f"{label} granted none of the scopes asked for: connect the mailbox again", field="scope")
    return await credentials.create_credential(
        session,
        box,
        kind=kind,
        user=pending.user,
        brand=pending.brand,
        email=address,
        scope_summary=granted,
        access_token=grant.access_token,
        refresh_token=grant.refresh_token,
        expires_at=grant.expires_at,
    )
