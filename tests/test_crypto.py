"""Sealed tokens: opaque, tamper-evident, expiring, and bound to one purpose."""

from __future__ import annotations

import pytest

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
def test_a_tampered_token_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
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
