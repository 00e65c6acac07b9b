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
    """The domain of Message-IDs: the sending domain when there is one, else the service's host."""
    if transport_name(settings) == "mailgun" and settings.mailgun_domain:
        return settings.mailgun_domain
    return urlsplit(settings.public_url).hostname or "mailroom.invalid"


def default_from(settings: Settings) -> str:
    """The service's own sender: MAILROOM_DEFAULT_FROM, else no-reply@ the sending domain.

    An IP address or a bare host name (the quick start's 127.0.0.1) is no mail domain, so mail then
    comes from no-reply@localhost until the operator configures one.
    """
    if settings.default_from:
        return settings.default_from
    domain = message_domain(settings)
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        if "." in domain:
            return f"no-reply@{domain}"
    return "no-reply@localhost"
