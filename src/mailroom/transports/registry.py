"""The ESPs a worker can send through, by name: how each is built from the settings and what it can do.

MAILROOM_TRANSPORT names one; unset, the transport is inferred from what is configured (``transport_name``).
The sender, the API and the domains service ask the chosen transport's ``capabilities`` and the entry's
hooks, never its name. Adding a provider is its transport module, its settings in config.py and one
entry in ``REGISTRY``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mailroom.config import Settings
from mailroom.transports.base import Capabilities, RouteOptions, Transport
from mailroom.transports.mailgun import MailgunOptions, MailgunTransport
from mailroom.transports.mailgun_domains import MailgunDomains
from mailroom.transports.outbox import OutboxTransport
from mailroom.transports.provider_domains import DomainSetupError, ProviderDomains
from mailroom.transports.smtp import SmtpTransport

# sending_domains.provider of a domain whose records are the service's own (SPF, the DKIM key mail From it
# is signed with, DMARC): any transport that does not set domains up itself. Stored, so it keeps its name.
OWN_RECORDS = "smtp"


@dataclass(frozen=True, slots=True)
class DomainSetup:
    """How an ESP that sends for a user's domain only once it is set up there (``verifies_domains``) does so."""

    # The provider's domains API; raises DomainSetupError when the settings it needs are missing.
    api: Callable[[Settings], ProviderDomains]
    # The name of the domain set up at the provider for a user's address domain.
    name: Callable[[Settings, str], str]
    # What a message From such a domain carries to the transport, given the provider's domain.
    options: Callable[[str], RouteOptions]


def _no_domain(settings: Settings) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Registered:
    name: str
    capabilities: Capabilities
    # Whether the settings hold what it needs; raising ValueError naming them is ``build``'s part.
    configured: Callable[[Settings], bool]
    build: Callable[[Settings], Transport]
    # The provider's own sending domain, when it has one: the domain of Message-IDs and of the service's From.
    sending_domain: Callable[[Settings], str | None] = _no_domain
    domains: DomainSetup | None = None

    def __post_init__(self) -> None:
        if self.capabilities.verifies_domains != (self.domains is not None):
            raise ValueError(f"transport {self.name}: a domain setup goes with verifies_domains, and only with it")


def _mailgun(settings: Settings) -> Transport:
    key, domain = settings.mailgun_api_key, settings.mailgun_domain
    if not (key and domain):
        raise ValueError("MAILROOM_TRANSPORT=mailgun needs MAILROOM_MAILGUN_API_KEY and MAILROOM_MAILGUN_DOMAIN")
    return MailgunTransport(settings.mailgun_api_url, key, domain)


def _mailgun_domains(settings: Settings) -> ProviderDomains:
    if not settings.mailgun_api_key:
        raise DomainSetupError("Mailgun is the transport but MAILROOM_MAILGUN_API_KEY is not set")
    return MailgunDomains(settings.mailgun_api_url, settings.mailgun_api_key)


def _smtp(settings: Settings) -> Transport:
    if not settings.smtp_url:
        raise ValueError("MAILROOM_TRANSPORT=smtp needs MAILROOM_SMTP_URL")
    return SmtpTransport(settings.smtp_url, pool_size=settings.smtp_connections)


# In the order the README lists them. Unset, MAILROOM_TRANSPORT is the last one configured: an ESP's API
# before a relay, a relay before the outbox, which needs nothing, so mail is never silently sent nowhere.
REGISTRY: dict[str, Registered] = {
    entry.name: entry
    for entry in (
        Registered(
            "outbox",
            OutboxTransport.capabilities,
            configured=lambda settings: True,
            build=lambda settings: OutboxTransport(outbox_folder(settings)),
        ),
        Registered(
            "smtp", SmtpTransport.capabilities, configured=lambda settings: bool(settings.smtp_url), build=_smtp
        ),
        Registered(
            "mailgun",
            MailgunTransport.capabilities,
            configured=lambda settings: bool(settings.mailgun_api_key and settings.mailgun_domain),
            build=_mailgun,
            sending_domain=lambda settings: settings.mailgun_domain,
            domains=DomainSetup(
                api=_mailgun_domains,
                name=lambda settings, domain: settings.mailgun_domain_pattern.format(domain=domain),
                options=lambda name: MailgunOptions(domain=name),
            ),
        ),
    )
}


def outbox_folder(settings: Settings) -> Path:
    """Where the outbox transport writes each message, one file per message."""
    return settings.data_dir / "outbox"


def transport_name(settings: Settings) -> str:
    if settings.transport:
        return settings.transport
    return next(entry.name for entry in reversed(REGISTRY.values()) if entry.configured(settings))


def registered(settings: Settings) -> Registered | None:
    """The entry of the configured transport; None for a name no entry has (make_transport refuses it)."""
    return REGISTRY.get(transport_name(settings))


def make_transport(settings: Settings) -> Transport:
    name = transport_name(settings)
    entry = REGISTRY.get(name)
    if entry is None:
        *others, last = REGISTRY
        raise ValueError(f"MAILROOM_TRANSPORT: unknown transport {name!r} ({', '.join(others)} or {last})")
    return entry.build(settings)


def domain_setup(settings: Settings) -> DomainSetup | None:
    """How users' domains are set up with the configured ESP; None when their records are the service's own."""
    entry = registered(settings)
    return entry.domains if entry is not None else None


def domain_provider(settings: Settings) -> str:
    """Whose records a user's sending domain needs with the configured transport (sending_domains.provider)."""
    entry = registered(settings)
    return entry.name if entry is not None and entry.domains is not None else OWN_RECORDS


def _sending_domain(settings: Settings) -> str | None:
    entry = registered(settings)
    return entry.sending_domain(settings) if entry is not None else None


def message_domain(settings: Settings) -> str:
    """The domain of Message-IDs: the sending domain when there is one, else the service's host (not an IPv6
    address, whose colons no Message-ID can carry)."""
    domain = _sending_domain(settings)
    if domain:
        return domain
    host = _public_host(settings)
    return "mailroom.invalid" if ":" in host else host


def default_from(settings: Settings) -> str:
    """The service's own sender: MAILROOM_DEFAULT_FROM; else no-reply@ the ESP's sending domain when it has one,
    else no-reply@ the host of MAILROOM_PUBLIC_URL, an IP address written as an address literal
    (no-reply@[192.0.2.1]). localhost is no mail domain anywhere, so a loopback name gives the loopback
    address's literal: the quick start's mail is From no-reply@[127.0.0.1], and serve says it will not be
    delivered (see undeliverable_sender)."""
    if settings.default_from:
        return settings.default_from
    domain = _sending_domain(settings)
    if domain:
        return f"no-reply@{domain}"
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
    if settings.default_from or _sending_domain(settings):
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
