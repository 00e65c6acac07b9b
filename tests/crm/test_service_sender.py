"""The service's own sender (address confirmations) when MAILROOM_DEFAULT_FROM is not set: no-reply at the
host of MAILROOM_PUBLIC_URL, never at localhost, and said to be undeliverable when that host is loopback."""

from __future__ import annotations

from email.utils import parseaddr

import pytest

from mailroom.config import Settings
from tests.support.sender import first_mail_over_smtp
from tests.support.world import World


@pytest.mark.parametrize(
    ("public_url", "sender"),
    [
        ("http://127.0.0.1:8000", "no-reply@[127.0.0.1]"),
        ("http://localhost:8000", "no-reply@[127.0.0.1]"),
        ("http://192.0.2.10:8000", "no-reply@[192.0.2.10]"),
        ("http://[2001:db8::10]:8000", "no-reply@[IPv6:2001:db8::10]"),
        ("https://mailhost", "no-reply@mailhost"),
    ],
)
async def test_confirmation_mail_is_from_the_public_urls_host(
    world: World, settings: Settings, public_url: str, sender: str
) -> None:
    admin = await world.brand_admin()
    added = await admin.post(f"/brands/{admin.brand}/users", {"email": "new@example.com", "role": "Agent"})
    assert added.status_code == 200, added.text
    server = await first_mail_over_smtp(settings.model_copy(update={"public_url": public_url}))
    (mail,) = server.messages
    assert mail.rcpt_tos == ["new@example.com"] and mail.message["Subject"] == "Confirm your email address"
    assert parseaddr(mail.message["From"])[1] == sender and mail.envelope_from == sender
