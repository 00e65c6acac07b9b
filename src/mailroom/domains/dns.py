"""Live checks of the DNS records a sending domain needs, asked of the configured resolvers.

Records are compared the way DNS means them, not as text: names without their trailing dot and in any
case, a TXT record's strings joined into one value, an SPF mechanism found inside a longer ``v=spf1``
record, a DKIM key compared on its ``p=`` value with whitespace ignored, DMARC present when a
``v=DMARC1`` record is. A check never raises: a server that does not answer makes the record inactive
with the reason, so a verification can always say what it saw.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailroom.config import dns_server_addresses

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """A record a domain must publish: ``desired_value`` is what to put in DNS."""

    name: str
    record_type: str  # TXT, CNAME or MX
    desired_value: str
    priority: int | None = None  # MX


@dataclass(frozen=True, slots=True)
class RecordCheck:
    is_active: bool
    name: str
    record_type: str
    desired_value: str
    reason: str | None = None
    # False when no server gave an answer: the record's state is unknown, not wrong.
    answered: bool = True


def bare(name: str) -> str:
    return name.strip().rstrip(".").lower()


class DnsChecker:
    """Checks records against ``servers`` (see ``Settings.dns_servers``), or the system's resolvers."""

    def __init__(self, servers: str | None = None, *, timeout: float = 2.0) -> None:
        self._servers = servers
        self._timeout = timeout

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if not self._servers:
            resolver = dns.asyncresolver.Resolver()
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in dns_server_addresses(self._servers)
            ]
        # Names are always absolute: a search domain must never turn a missing record into someone else's.
        resolver.search = []
        resolver.use_search_by_default = False
        resolver.timeout = self._timeout
        resolver.lifetime = self._timeout * 2
        return resolver

    async def check_all(self, records: Sequence[DnsRecord]) -> list[RecordCheck]:
        try:
            resolver = self._resolver()
        except (dns.exception.DNSException, OSError) as exc:  # no resolv.conf, say
            reason = f"no DNS resolver to ask: {exc}"
            return [RecordCheck(False, r.name, r.record_type, r.desired_value, reason, False) for r in records]
        return list(await asyncio.gather(*(self._check(resolver, r) for r in records)))

    async def check(self, record: DnsRecord) -> RecordCheck:
        (result,) = await self.check_all([record])
        return result

    async def _check(self, resolver: dns.asyncresolver.Resolver, record: DnsRecord) -> RecordCheck:
        def result(active: bool, reason: str | None = None, *, answered: bool = True) -> RecordCheck:
            return RecordCheck(
                active, record.name, record.record_type, record.desired_value, None if active else reason, answered
            )

        kind = record.record_type.upper()
        try:
            answer = await resolver.resolve(dns.name.from_text(bare(record.name) + "."), kind, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return result(False, f"no {kind} record at {bare(record.name)}")
        except dns.resolver.LifetimeTimeout:
            return result(False, f"the DNS server did not answer for {bare(record.name)} in time", answered=False)
        except dns.resolver.NoNameservers as exc:
            return result(False, f"no DNS server could answer for {bare(record.name)}: {exc}", answered=False)
        except dns.exception.DNSException as exc:
            return result(False, f"DNS lookup of {bare(record.name)} failed: {exc}", answered=False)
        except OSError as exc:  # the server's port unreachable, no route
            return result(False, f"the DNS server could not be reached: {exc}", answered=False)
        if kind == "TXT":
            found = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
            return result(*_txt_matches(record.desired_value, found))
        if kind == "CNAME":
            targets = [bare(r.target.to_text()) for r in answer]
            if bare(record.desired_value) in targets:
                return result(True)
            return result(False, f"{bare(record.name)} points to {', '.join(targets)}")
        if kind == "MX":
            exchanges = [bare(r.exchange.to_text()) for r in answer]
            if bare(record.desired_value.split()[-1]) in exchanges:
                return result(True)
            return result(False, f"the mail servers of {bare(record.name)} are {', '.join(exchanges)}")
        values = [r.to_text() for r in answer]
        return result(record.desired_value in values, f"{bare(record.name)} holds {', '.join(values)}")


def _tags(value: str) -> dict[str, str]:
    """``v=DKIM1; k=rsa; p=...`` as {tag: value}, whitespace inside values removed (RFC 6376 3.2)."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = _SPACE.sub("", tag_value)
    return tags


def _txt_matches(desired: str, found: list[str]) -> tuple[bool, str | None]:
    lowered = desired.strip().lower()
    if lowered.startswith("v=spf1"):
        spf = [f for f in found if f.strip().lower().split()[:1] == ["v=spf1"]]
        if not spf:
            return False, "no SPF (v=spf1) record"
        if len(spf) > 1:
            return False, "more than one SPF record: receivers treat that as an error"
        wanted = [t for t in lowered.split()[1:] if t.lstrip("+-~?") != "all"]
        present = {t.lstrip("+") for t in spf[0].lower().split()[1:]}
        missing = [t for t in wanted if t.lstrip("+") not in present]
        return (False, f"the SPF record lacks {' '.join(missing)}") if missing else (True, None)
    if lowered.startswith("v=dmarc1"):
        if any(f.strip().lower().startswith("v=dmarc1") for f in found):
            return True, None
        return False, "no DMARC (v=DMARC1) record"
    wanted_tags = _tags(desired)
    if "p" in wanted_tags:  # a DKIM key: the key is what matters, not the order or spacing of the tags
        keys = [_tags(f).get("p") for f in found]
        if wanted_tags["p"] in keys:
            return True, None
        return False, "the DKIM record holds another key" if any(keys) else "no DKIM key (p=) in the record"
    normal = _SPACE.sub(" ", desired.strip())
    if any(_SPACE.sub(" ", f.strip()) == normal for f in found):
        return True, None
    return False, "the TXT record holds another value"
