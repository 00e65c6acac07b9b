"""Which transport a worker uses: MAILROOM_TRANSPORT, else inferred from what is configured."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from mailroom.config import Settings
from mailroom.transports.base import Transport
from mailroom.transports.mailgun import MailgunTransport
from mailroom.transports.outbox import OutboxTransport
from mailroom.transports.smtp import SmtpTransport


def transport_name(settings: Settings) -> str:
    if settings.transport:
        return settings.transport
    if settings.mailgun_api_key and settings.mailgun_domain:
        return "mailgun"
    if settings.smtp_url:
        return "smtp"
    # Nothing configured: mail goes to files a person can open, never silently nowhere.
    return "outbox"


def make_transport(settings: Settings) -> Transport:
    name = transport_name(settings)
    if name == "mailgun":
        if not (settings.mailgun_api_key and settings.mailgun_domain):
            raise ValueError("MAILROOM_TRANSPORT=mailgun needs MAILROOM_MAILGUN_API_KEY and MAILROOM_MAILGUN_DOMAIN")
        return MailgunTransport(settings.mailgun_api_url, settings.mailgun_api_key, settings.mailgun_domain)
    if name == "smtp":
        if not settings.smtp_url:
            raise ValueError("MAILROOM_TRANSPORT=smtp needs MAILROOM_SMTP_URL")
        return SmtpTransport(settings.smtp_url, pool_size=settings.smtp_connections)
    if name == "outbox":
        return OutboxTransport(settings.data_dir / "outbox")
    raise ValueError(f"MAILROOM_TRANSPORT: unknown transport {name!r} (outbox, smtp or mailgun)")


def message_domain(settings: Settings) -> str:
    """The domain of Message-IDs: the sending domain when there is one, else the service's host (not an IPv6
    address, whose colons no Message-ID can carry)."""
    if transport_name(settings) == "mailgun" and settings.mailgun_domain:
        return settings.mailgun_domain
    host = _public_host(settings)
    return "mailroom.invalid" if ":" in host else host


def default_from(settings: Settings) -> str:
    """The service's own sender: MAILROOM_DEFAULT_FROM; else no-reply@ the Mailgun domain when sending through
    Mailgun, else no-reply@ the host of MAILROOM_PUBLIC_URL, an IP address written as an address literal
    (no-reply@[192.0.2.1]). localhost is no mail domain anywhere, so a loopback name gives the loopback
    address's literal: the quick start's mail is From no-reply@[127.0.0.1], and serve says it will not be
    delivered (see undeliverable_sender)."""
    if settings.default_from:
        return settings.default_from
    if transport_name(settings) == "mailgun" and settings.mailgun_domain:
        return f"no-reply@{settings.mailgun_domain}"
    host = _public_host(settings)
    if _is_localhost_name(host):
        return "no-reply@[127.0.0.1]"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"no-reply@{host}"
    return f"no-reply@[IPv6:{address.compressed}]" if address.version == 6 else f"no-reply@[{address}]"


def undeliverable_sender(settings: Settings) -> str | None:
    """Why the service's own mail (address confirmations) cannot reach anyone, or None: the sender was
    derived from a public URL on loopback, which no receiving server accepts mail from."""
    if settings.default_from or (transport_name(settings) == "mailgun" and settings.mailgun_domain):
        return None
    host = _public_host(settings)
    try:
        loopback = _is_localhost_name(host) or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    return (
        f"the service's own mail (address confirmations) goes out From {default_from(settings)}, which no receiver "
        "accepts: set MAILROOM_DEFAULT_FROM, or MAILROOM_PUBLIC_URL to the service's public address"
    )


def _public_host(settings: Settings) -> str:
    return urlsplit(settings.public_url).hostname or "mailroom.invalid"


def _is_localhost_name(host: str) -> bool:
    # RFC 6761: localhost names are the machine itself, whatever a resolver would say.
    return host in ("localhost", "localhost.localdomain") or host.endswith(".localhost")
