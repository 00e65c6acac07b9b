"""Secrets at rest and signed links.

API tokens are kept only as SHA-256 digests. Provider tokens (Google, Microsoft) must be usable again,
so they are encrypted with a key derived from the service secret (Fernet: AES-128-CBC + HMAC).
Every use of the service secret goes through its own HKDF-derived key (:meth:`SecretBox.key_for`):
a key leaked or misused in one place cannot forge or read what another place protects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_PREFIX = "mr_"


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class InvalidToken(Exception):
    """A sealed token that is forged, tampered with, expired or made for another purpose."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: only the one encoding :func:`_b64` makes. A lenient decoder ignores the spare bits of
    the last character, so a changed token could still decode to the same bytes."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:
        raise ValueError("not the canonical encoding")
    return raw


class SecretBox:
    """Encrypts and decrypts provider tokens, and signs values for public links."""

    def __init__(self, secret_key: str) -> None:
        self._secret = secret_key.encode()
        self._purpose_keys: dict[str, bytes] = {}
        self._fernet = Fernet(base64.urlsafe_b64encode(self.key_for("provider-tokens")))

    def key_for(self, purpose: str) -> bytes:
        """A 256-bit key for one purpose, derived with HKDF: a key leaked or misused in one place
        cannot forge tokens of another."""
        key = self._purpose_keys.get(purpose)
        if key is None:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"mailroom", info=b"mailroom:" + purpose.encode())
            key = self._purpose_keys[purpose] = hkdf.derive(self._secret)
        return key

    def seal(self, purpose: str, payload: dict[str, Any], *, ttl: float) -> str:
        """An opaque, URL-safe token that carries ``payload`` for ``ttl`` seconds.

        AES-GCM under the purpose's key: nobody can read the payload from the token, change it, or
        use a token made for one purpose (an invitation) as another (an email confirmation).
        """
        body = json.dumps({"p": payload, "exp": int(time.time() + ttl)}, separators=(",", ":")).encode()
        nonce = secrets.token_bytes(12)
        return _b64(nonce + AESGCM(self.key_for(purpose)).encrypt(nonce, body, purpose.encode()))

    def unseal(self, purpose: str, token: str) -> dict[str, Any]:
        """The payload of a token made by :meth:`seal` for ``purpose``; InvalidToken otherwise."""
        try:
            raw = _unb64(token)
            if _b64(raw) != token:
                raise ValueError("not the canonical encoding")  # one token per sealing, no look-alikes
            body = AESGCM(self.key_for(purpose)).decrypt(raw[:12], raw[12:], purpose.encode())
            sealed = json.loads(body)
        except (ValueError, InvalidTag):
            raise InvalidToken("invalid token") from None
        if not isinstance(sealed, dict) or not isinstance(sealed.get("p"), dict) or sealed.get("exp", 0) < time.time():
            raise InvalidToken("expired token")
        payload: dict[str, Any] = sealed["p"]
        return payload

    def encrypt(self, value: str | None) -> bytes | None:
        return None if value is None else self._fernet.encrypt(value.encode())

    def decrypt(self, value: bytes | None) -> str | None:
        return None if value is None else self._fernet.decrypt(value).decode()

    def sign(self, value: str, *, purpose: str = "signature") -> str:
        """A 128-bit HMAC-SHA256 of ``value`` under the purpose's key."""
        mac = hmac.new(self.key_for(purpose), value.encode(), hashlib.sha256).digest()[:16]
        return _b64(mac)

    def verify(self, value: str, signature: str, *, purpose: str = "signature") -> bool:
        return hmac.compare_digest(self.sign(value, purpose=purpose), signature)

    def seal_fixed(self, purpose: str, data: bytes) -> str:
        """An opaque, URL-safe token for ``data`` that never expires and is the same every time.

        AES-SIV (RFC 5297) under the purpose's key: deterministic authenticated encryption, so a link
        made from the same data is the same link (nothing to store) and nobody can read or alter it.
        For links that must keep working for years, such as unsubscribe links in old newsletters.
        """
        return _b64(AESSIV(self.key_for(purpose)).encrypt(data, [purpose.encode()]))

    def unseal_fixed(self, purpose: str, token: str) -> bytes:
        """The data of a token made by :meth:`seal_fixed` for ``purpose``; InvalidToken otherwise."""
        try:
            return AESSIV(self.key_for(purpose)).decrypt(_unb64(token), [purpose.encode()])
        except (ValueError, InvalidTag):
            raise InvalidToken("invalid token") from None
