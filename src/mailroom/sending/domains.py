"""Mail From a domain whose records are verified goes out as that domain.

Through SMTP (or the outbox) each message is DKIM-signed (relaxed/relaxed) with the domain's own key, so
receivers see it signed by the domain it is From. Through an ESP that sends only for domains set up with it
(``verifies_domains``) it is sent through the domain set up there for it (Mailgun:
``/v3/<its domain>/messages``, so Mailgun signs it for that domain and takes its bounces there) with a
``Sender`` at that domain. Only enabled domains set up for the transport in use are used, read afresh for
each chunk of messages (one indexed query per chunk of up to a hundred or more): a domain enabled or
disabled is used, or no longer used, from the next send on. Nothing is kept between chunks, since anything
kept would outlive a change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr

import dkim
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.crypto import SecretBox
from mailroom.transports.base import RouteOptions
from mailroom.transports.registry import DomainSetup

ENABLED = text(
    """
    SELECT domain, provider, esp_domain, dkim_selector, dkim_private_key
    FROM sending_domains WHERE domain = :domain AND enabled_at IS NOT NULL
    """
)
# Signed headers: those a receiver shows or threads by; a relay adding others does not break the signature.
SIGNED_HEADERS = [
    b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID", b"Reply-To", b"In-Reply-To", b"References",
    b"MIME-Version", b"Content-Type", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Sender",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class OwnDomain:
    """An enabled domain, as the transport in use sends for it."""

    domain: str
    selector: str | None = None
    private_key: bytes | None = None  # PEM: set when mail through SMTP is signed
    esp_domain: str | None = None  # set when mail through the ESP goes through the domain set up there
    # What mail From the domain carries to the ESP's transport (the domain it goes through).
    options: RouteOptions | None = None

    def headers(self, from_address: str) -> dict[str, str]:
        if self.esp_domain is None:
            return {}
        local = parseaddr(from_address)[1].rpartition("@")[0]
        return {"Sender": f"{local}@{self.esp_domain}"}

    def sign(self, segments: Sequence[bytes]) -> tuple[bytes, ...]:
        """The message with a DKIM-Signature header in front; unchanged when mail is not signed here."""
        if self.private_key is None or self.selector is None:
            return tuple(segments)
        signature = dkim.sign(
            b"".join(segments),
            self.selector.encode(),
            self.domain.encode(),
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=SIGNED_HEADERS,
        )
        return (signature, *segments)


class SendingDomains:
    """The enabled domains the sender uses, looked up by the From address's domain."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        *,
        provider: str,
        setup: DomainSetup | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._box = box
        # Whose records a domain must have been verified with to be used (registry.domain_provider), and
        # how mail goes out as it when that is the ESP's.
        self._provider = provider
        self._setup = setup

    async def for_address(self, address: str) -> OwnDomain | None:
        domain = parseaddr(address)[1].rpartition("@")[2].lower()
        if not domain:
            return None
        async with self._sessionmaker() as session:
            row = (await session.execute(ENABLED, {"domain": domain})).one_or_none()
        if row is None or row.provider != self._provider:
            return None
        if self._setup is not None:
            if not row.esp_domain:
                return None
            return OwnDomain(domain, esp_domain=row.esp_domain, options=self._setup.options(row.esp_domain))
        if row.dkim_private_key is None:
            return None
        key = self._box.decrypt(row.dkim_private_key)
        return OwnDomain(domain, selector=row.dkim_selector, private_key=key.encode() if key else None)
