"""Mail From a domain whose records are verified goes out as that domain.

Through SMTP (or the outbox) each message is DKIM-signed (relaxed/relaxed) with the domain's own key, so
receivers see it signed by the domain it is From. Through Mailgun it is sent through the domain set up
there for it (``/v3/<mailgun domain>/messages``: Mailgun signs it for that domain and takes its bounces
there) with a ``Sender`` at that domain. Only enabled domains are used, read afresh for each chunk of messages
(one indexed query per chunk of up to a hundred or more): a domain enabled or disabled is used, or no longer
used, from the next send on. Nothing is kept between chunks, since anything kept would outlive a change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr

import dkim
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.crypto import SecretBox

ENABLED = text(
    """
    SELECT domain, provider, mailgun_domain, dkim_selector, dkim_private_key
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
    mailgun_domain: str | None = None  # set when mail through Mailgun goes through it

    def headers(self, from_address: str) -> dict[str, str]:
        if self.mailgun_domain is None:
            return {}
        local = parseaddr(from_address)[1].rpartition("@")[0]
        return {"Sender": f"{local}@{self.mailgun_domain}"}

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

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], box: SecretBox, transport: str) -> None:
        self._sessionmaker = sessionmaker
        self._box = box
        self._transport = transport

    async def for_address(self, address: str) -> OwnDomain | None:
        domain = parseaddr(address)[1].rpartition("@")[2].lower()
        if not domain:
            return None
        async with self._sessionmaker() as session:
            row = (await session.execute(ENABLED, {"domain": domain})).one_or_none()
        if row is None:
            return None
        if row.provider == "mailgun" and self._transport == "mailgun" and row.mailgun_domain:
            return OwnDomain(domain, mailgun_domain=row.mailgun_domain)
        if row.provider == "smtp" and self._transport != "mailgun" and row.dkim_private_key is not None:
            key = self._box.decrypt(row.dkim_private_key)
            return OwnDomain(domain, selector=row.dkim_selector, private_key=key.encode() if key else None)
        return None
