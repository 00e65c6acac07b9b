"""Setting up the sending domain of a user's address domain, verifying its DNS records, re-checking them.

Through an ESP that sends only for domains set up with it (Mailgun) the domain (``rechat-mail.<domain>``
by default) is created with the provider's domains API and the records are the ones it asks for; through
any other transport (SMTP, the outbox) they are the service's own: the SPF mechanism of the relay when
configured, a DKIM key generated for the domain, DMARC, and the tracking CNAME when a tracking host is
configured. Every record is checked live with our own DNS lookups.

Once every required record is active the domain is enabled (``enabled_at``) and the sender uses it; an
enabled domain whose records are found wrong or missing later is disabled with the reason. A record that
could not be looked up (the DNS server did not answer) is reported inactive but changes nothing: an
outage of the resolver must not stop a domain's mail.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, overload

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field
from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import TypedDict

from mailroom.config import Settings
from mailroom.crm.models import Person
from mailroom.crypto import SecretBox
from mailroom.db import make_engine, make_sessionmaker, resolve_database_url
from mailroom.domains.dns import DnsChecker, DnsRecord, bare
from mailroom.domains.models import SendingDomain
from mailroom.errors import BadGateway, BadRequest, NotFound
from mailroom.serialize import closed
from mailroom.transports.provider_domains import DomainSetupError, ProviderDomain, ProviderDomains
from mailroom.transports.registry import DomainSetup, domain_provider, domain_setup

log = logging.getLogger(__name__)

# Addresses at these are people's own mailboxes: nobody can publish records for them, and mail from
# them goes out through the connected Gmail or Outlook mailbox instead.
FREE_MAILBOX_DOMAINS = frozenset(
    {
        "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com", "yahoo.com",
        "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com", "protonmail.com", "proton.me", "gmx.com",
        "gmx.net", "mail.com", "zoho.com", "yandex.com", "hotmail.co.uk", "yahoo.co.uk", "outlook.fr",
    }
)  # fmt: skip
DKIM_KEY_BITS = 2048
# The provider's records and our own alike: the tracking host lives under this label of the domain.
TRACKING_LABEL = "email"


@dataclass(frozen=True, slots=True)
class _Wanted:
    record: DnsRecord
    # Receiving (MX) records help replies and bounces but do not decide whether mail may be sent.
    required: bool = True


def address_domain(user: Person) -> str:
    """The domain of the user's confirmed address; 400 when unconfirmed or a free mailbox provider's."""
    if not user.email_confirmed:
        raise BadRequest("confirm your email address before setting up its domain", field="email")
    domain = bare(user.email.rpartition("@")[2])
    if not domain or "." not in domain:
        raise BadRequest("your address has no domain to send from", field="email")
    if domain in FREE_MAILBOX_DOMAINS:
        raise BadRequest(f"{domain} is a mailbox provider's domain: use the mailbox connection instead", field="email")
    return domain


async def get_domain(session: AsyncSession, user: Person) -> SendingDomain:
    domain = address_domain(user)
    row = (await session.execute(select(SendingDomain).where(SendingDomain.domain == domain))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no sending domain is set up for {domain}", field="domain")
    return row


@closed
class DomainOut(TypedDict):
    """The sending domain set up for the caller's address domain."""

    id: uuid.UUID
    mailgun_domain: Annotated[str | None, Field(description="The domain set up at Mailgun; null until one is")]
    domain: Annotated[str, Field(description="The caller's address domain")]
    created_at: Annotated[str, Field(description="ISO 8601 with milliseconds, in UTC")]
    enabled_at: Annotated[
        str | None, Field(description="When its required records were all found (ISO 8601); null while they are not")
    ]
    risks: Annotated[str | None, Field(description="A PostgreSQL array literal; not assessed here: {unknown}")]


@closed
class DnsRecordOut(TypedDict):
    """A DNS record the domain needs, as it was found just now."""

    is_active: Annotated[bool, Field(description="Published as desired")]
    name: str
    record_type: Annotated[str, Field(description="TXT, CNAME or MX")]
    desired_value: Annotated[str, Field(description="What to publish")]
    reason: Annotated[str | None, Field(description="Why it is not active")]


def view(row: SendingDomain) -> DomainOut:
    """The document's domain object."""
    return {
        "id": row.id,
        # The document's name for the domain set up at the ESP.
        "mailgun_domain": row.esp_domain,
        "domain": row.domain,
        "created_at": _iso(row.created_at),
        "enabled_at": _iso(row.enabled_at),
        "risks": row.risks,
    }


@overload
def _iso(value: datetime) -> str: ...
@overload
def _iso(value: datetime | None) -> str | None: ...
def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def answer(checks: Sequence[dict[str, Any]]) -> list[DnsRecordOut]:
    """The records as the verify route answers them."""
    return [
        {
            "is_active": check["is_active"],
            "name": check["name"],
            "record_type": check["record_type"],
            "desired_value": check["desired_value"],
            "reason": check.get("reason"),
        }
        for check in checks
    ]


async def verify(
    session: AsyncSession, user: Person, *, settings: Settings, box: SecretBox, dns: DnsChecker | None = None
) -> list[DnsRecordOut]:
    """Set up (or look up) the sending domain of the user's address domain and check its records now."""
    domain = address_domain(user)
    provider = domain_provider(settings)
    await session.execute(
        insert(SendingDomain)
        .values(domain=domain, provider=provider, created_by=user.id, risks="{unknown}")
        .on_conflict_do_nothing(index_elements=["domain"])
    )
    # Locked, so two verifications of one domain cannot generate two keys or race on its state.
    row = (
        await session.execute(select(SendingDomain).where(SendingDomain.domain == domain).with_for_update())
    ).scalar_one()
    return await check_domain(session, row, settings=settings, box=box, dns=dns)


async def check_domain(
    session: AsyncSession, row: SendingDomain, *, settings: Settings, box: SecretBox, dns: DnsChecker | None = None
) -> list[DnsRecordOut]:
    """Check the domain's records now, store what was seen and enable or disable it accordingly."""
    dns = dns or DnsChecker(settings.dns_servers)
    provider, setup = domain_provider(settings), domain_setup(settings)
    now = datetime.now(UTC)
    if row.provider != provider:
        row.provider = provider
        row.enabled_at = None  # records of the other provider say nothing about this one's
    if setup is not None:
        wanted = await _provider_records(row, settings, setup)
    else:
        wanted = _own_records(row, settings, box)
    checks = await dns.check_all([w.record for w in wanted])
    if setup is not None and all(c.is_active for c, w in zip(checks, wanted, strict=True) if w.required):
        # The provider looks at the DNS itself before it sends for the domain: tell it now rather than later.
        await _provider_call(settings, setup, lambda client: client.verify(str(row.esp_domain)))
    stored = [{**asdict(c), "required": w.required} for c, w in zip(checks, wanted, strict=True)]
    _settle(row, stored, now)
    row.records = stored
    row.checked_at = now
    row.updated_at = now
    await session.flush()
    return answer(stored)


def _settle(row: SendingDomain, stored: list[dict[str, Any]], now: datetime) -> None:
    required = [r for r in stored if r["required"]]
    # A provider answering no records at all has not set the domain up: nothing to enable.
    if required and all(r["is_active"] for r in required):
        if row.enabled_at is None:
            row.enabled_at = now
            row.disabled_at = None
            row.disabled_reason = None
        return
    wrong = [r for r in required if not r["is_active"] and r["answered"]]
    if row.enabled_at is not None and wrong:
        row.enabled_at = None
        row.disabled_at = now
        row.disabled_reason = "; ".join(f"{r['record_type']} {r['name']}: {r['reason']}" for r in wrong)


def _own_records(row: SendingDomain, settings: Settings, box: SecretBox) -> list[_Wanted]:
    if row.dkim_private_key is None or row.dkim_public_key is None:
        private_pem, public_key = new_dkim_key()
        row.dkim_private_key = box.encrypt(private_pem)
        row.dkim_public_key = public_key
        row.dkim_selector = settings.dkim_selector
    selector = row.dkim_selector or settings.dkim_selector
    wanted = []
    if settings.spf_include:
        wanted.append(_Wanted(DnsRecord(row.domain, "TXT", f"v=spf1 {settings.spf_include} ~all")))
    wanted.append(_Wanted(DnsRecord(f"{selector}._domainkey.{row.domain}", "TXT", dkim_record(row.dkim_public_key))))
    wanted.append(_Wanted(DnsRecord(f"_dmarc.{row.domain}", "TXT", settings.dmarc_value)))
    if settings.tracking_host:
        wanted.append(_Wanted(DnsRecord(f"{TRACKING_LABEL}.{row.domain}", "CNAME", bare(settings.tracking_host))))
    return wanted


def new_dkim_key() -> tuple[str, str]:
    """A new RSA key: (private key PEM, public key as the base64 DER a DKIM record's p= carries)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=DKIM_KEY_BITS)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, base64.b64encode(public_der).decode()


def dkim_record(public_key: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key}"


async def _provider_records(row: SendingDomain, settings: Settings, setup: DomainSetup) -> list[_Wanted]:
    name = row.esp_domain or setup.name(settings, row.domain)
    row.esp_domain = name
    found = await _provider_call(settings, setup, lambda client: client.ensure(name))
    wanted = [_Wanted(DnsRecord(r.name, r.record_type, r.value, r.priority)) for r in found.sending]
    wanted += [_Wanted(DnsRecord(r.name, r.record_type, r.value, r.priority), required=False) for r in found.receiving]
    return wanted


async def _provider_call(
    settings: Settings, setup: DomainSetup, call: Callable[[ProviderDomains], Awaitable[ProviderDomain]]
) -> ProviderDomain:
    try:
        client = setup.api(settings)
    except DomainSetupError as exc:
        raise BadGateway(exc.reason, field="domain") from exc
    try:
        return await call(client)
    except DomainSetupError as exc:
        raise BadGateway(exc.reason, field="domain") from exc
    finally:
        await client.aclose()


async def recheck_domains(
    session: AsyncSession,
    *,
    settings: Settings,
    box: SecretBox,
    every: timedelta = timedelta(days=1),
    limit: int = 20,
    dns: DnsChecker | None = None,
) -> int:
    """Check again up to ``limit`` domains not checked within ``every`` (daily by default); returns how
    many were. The caller commits; call again until it answers 0.

    Rows locked by another worker are skipped, and each domain is checked in a savepoint so that one
    failing (the provider unreachable) does not undo the others.
    """
    due = or_(SendingDomain.checked_at.is_(None), SendingDomain.checked_at < datetime.now(UTC) - every)
    rows = (
        (await session.execute(select(SendingDomain).where(due).limit(limit).with_for_update(skip_locked=True)))
        .scalars()
        .all()
    )
    checked = 0
    for row in rows:
        try:
            async with session.begin_nested():
                await check_domain(session, row, settings=settings, box=box, dns=dns)
        except BadGateway as exc:
            log.warning("sending domain %s not re-checked: %s", row.domain, exc.message)
            row.checked_at = datetime.now(UTC)  # try again tomorrow rather than in a tight loop
        checked += 1
    return checked


async def recheck_forever(settings: Settings, *, interval: float = 3600.0) -> None:
    """Re-check due domains every ``interval`` seconds, each batch in its own transaction (a worker runs it)."""
    engine = make_engine(resolve_database_url(settings), pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    box = SecretBox(settings.resolved_secret_key())
    try:
        while True:
            try:
                while True:
                    async with sessionmaker() as session, session.begin():
                        if not await recheck_domains(session, settings=settings, box=box):
                            break
            except Exception:  # the next round tries again; the worker must keep sending meanwhile
                log.exception("re-checking sending domains failed")
            await asyncio.sleep(interval)
    finally:
        await engine.dispose()
