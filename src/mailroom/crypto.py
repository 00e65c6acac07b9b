"""Secrets at rest and signed links.

API tokens are kept only as SHA-256 digests. Provider tokens (Google, Microsoft) must be usable again,
so they are encrypted with a key derived from the service secret (Fernet: AES-128-CBC + HMAC).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet

TOKEN_PREFIX = "mr_"


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SecretBox:
    """Encrypts and decrypts provider tokens, and signs values for public links."""

    def __init__(self, secret_key: str) -> None:
        enc_key = hashlib.sha256(b"mailroom-encryption:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(enc_key))
        self._sign_key = hashlib.sha256(b"mailroom-signing:" + secret_key.encode()).digest()

    def encrypt(self, value: str | None) -> bytes | None:
        return None if value is None else self._fernet.encrypt(value.encode())

    def decrypt(self, value: bytes | None) -> str | None:
        return None if value is None else self._fernet.decrypt(value).decode()

    def sign(self, value: str) -> str:
        mac = hmac.new(self._sign_key, value.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def verify(self, value: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(value), signature)
