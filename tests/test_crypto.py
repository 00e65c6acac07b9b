"""Sealed tokens: opaque, tamper-evident, expiring, and bound to one purpose."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.fernet import InvalidToken as InvalidFernet

from mailroom.crypto import InvalidToken, SecretBox

KEY = "k" * 48


def test_a_sealed_token_gives_back_its_payload_and_hides_it() -> None:
    box = SecretBox(KEY)
    token = box.seal("invitation", {"email": "ann@example.com"}, ttl=60)
    assert box.unseal("invitation", token) == {"email": "ann@example.com"}
    assert "ann" not in token and "example" not in token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t[:20],
        lambda t: "",
        lambda t: "not base64 !!",
    ],
)
def test_a_tampered_token_is_refused(mangle: Callable[[str], str]) -> None:
    box = SecretBox(KEY)
    with pytest.raises(InvalidToken):
        box.unseal("invitation", mangle(box.seal("invitation", {"a": 1}, ttl=60)))


def test_a_token_is_refused_for_another_purpose_another_key_or_after_expiry() -> None:
    box = SecretBox(KEY)
    token = box.seal("invitation", {"a": 1}, ttl=60)
    with pytest.raises(InvalidToken):
        box.unseal("email-confirmation", token)
    with pytest.raises(InvalidToken):
        SecretBox("j" * 48).unseal("invitation", token)
    with pytest.raises(InvalidToken):
        box.unseal("invitation", box.seal("invitation", {"a": 1}, ttl=-1))


def test_a_fixed_token_is_the_same_each_time_hides_its_data_and_never_expires() -> None:
    box = SecretBox(KEY)
    data = b"brand-id|ann@example.com"
    token = box.seal_fixed("unsubscribe", data)
    assert token == SecretBox(KEY).seal_fixed("unsubscribe", data)
    assert box.unseal_fixed("unsubscribe", token) == data
    assert b"ann" not in base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)) and "ann" not in token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: ("A" if t[0] != "A" else "B") + t[1:],
        lambda t: t[:20],
        lambda t: t + "A",
        lambda t: "",
        lambda t: "not base64 !!",
    ],
)
def test_a_tampered_fixed_token_is_refused(mangle: Callable[[str], str]) -> None:
    box = SecretBox(KEY)
    with pytest.raises(InvalidToken):
        box.unseal_fixed("unsubscribe", mangle(box.seal_fixed("unsubscribe", b"some data")))


def test_each_use_of_the_secret_has_its_own_key() -> None:
    box, other = SecretBox(KEY), SecretBox("j" * 48)
    with pytest.raises(InvalidToken):
        box.unseal_fixed("file-link", box.seal_fixed("unsubscribe", b"x"))
    with pytest.raises(InvalidToken):
        other.unseal_fixed("unsubscribe", box.seal_fixed("unsubscribe", b"x"))
    assert box.sign("v") != box.sign("v", purpose="file-link")
    assert box.verify("v", box.sign("v")) and not other.verify("v", box.sign("v"))
    stored = box.encrypt("provider refresh token")
    assert box.decrypt(stored) == "provider refresh token"
    with pytest.raises(InvalidFernet):
        other.decrypt(stored)
