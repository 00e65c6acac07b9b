"""Connecting a Gmail or Outlook mailbox: the consent URL, and the callback that stores the credential.

The browser leaves with a ``state`` that is a sealed token naming a nonce, and comes back with it and
an authorization code. The nonce's row (``oauth_states``) holds who connects, for which brand, and the
PKCE verifier, encrypted: the verifier never travels, so a code intercepted on its way back is useless
without our database. The row is deleted as it is read, so a state works once.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
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
    return f"{settings.public_url.rstrip('/')}/users/self/{kind}/callback"


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
) -> str:
    """The consent URL to send the user's browser to. ``scopes`` are ours, already validated."""
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
    state = box.seal(STATE_PURPOSE, {"n": nonce, "k": kind}, ttl=STATE_TTL.total_seconds())
    return oauth.consent_url(
        state=state, code_challenge=challenge, scopes=wanted, redirect_uri=redirect_uri(settings, kind)
    )


async def finish_connect(
    session: AsyncSession,
    box: SecretBox,
    settings: Settings,
    http: httpx.AsyncClient,
    *,
    kind: credentials.Kind,
    code: str,
    state: str,
) -> credentials.Credential:
    """Redeems the code the provider sent back with ``state``; the stored credential."""
    oauth = client_for(settings, kind)
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
    # Membership may have ended while the consent screen was open.
    await require_member(session, row.user, row.brand, field="state")
    verifier = box.decrypt(bytes(row.verifier)) or ""
    label = LABELS[kind]
    try:
        grant = await oauth.exchange(code, verifier=verifier, redirect_uri=redirect_uri(settings, kind), client=http)
        address = await _address(settings, http, kind, grant)
    except InvalidGrant:
        raise BadRequest(f"{label} did not accept this code: connect the mailbox again", field="code") from None
    except OAuthError as exc:
        raise BadRequest(f"{label} refused the connection ({exc.error})", field="code") from None
    except TransientSendError as exc:
        raise BadGateway(f"{exc.reason}; connect the mailbox again later", field="code") from None
    # The user may have unticked scopes on the consent screen: record what was granted, not asked.
    granted = grant.scopes if grant.scopes is not None else list(row.scopes)
    if not granted:
        raise BadRequest(f"{label} granted none of the scopes asked for: connect the mailbox again", field="scope")
    return await credentials.create_credential(
        session,
        box,
        kind=kind,
        user=row.user,
        brand=row.brand,
        email=address,
        scope_summary=granted,
        access_token=grant.access_token,
        refresh_token=grant.refresh_token,
        expires_at=grant.expires_at,
    )
