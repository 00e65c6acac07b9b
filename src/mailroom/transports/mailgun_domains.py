"""Mailgun's domains API (``/v4/domains``, basic auth ``api:KEY``): set up a sending domain, read its DNS records.

``ensure(name)`` reads the domain (``GET /v4/domains/{name}``) and creates it (``POST /v4/domains``,
form field ``name``) when Mailgun does not know it; ``verify(name)`` asks Mailgun to look at the DNS
again (``PUT /v4/domains/{name}/verify``). Each answers the domain with its ``sending_dns_records``
(SPF, DKIM TXT, tracking CNAME) and ``receiving_dns_records`` (MX). Failures raise
``MailgunDomainsError`` with a reason safe to show (never the key). It is what ``provider_domains``
asks of a provider that sets domains up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from mailroom.transports.provider_domains import DomainSetupError
from mailroom.transports.responses import json_object


class MailgunDomainsError(DomainSetupError):
    """Mailgun refused or could not be reached; ``reason`` is safe to show a user."""


@dataclass(frozen=True, slots=True)
class MailgunDnsRecord:
    name: str
    record_type: str
    value: str
    priority: int | None
    # Mailgun's own view ("valid", "unknown"); ours comes from our own DNS check.
    valid: str | None


@dataclass(frozen=True, slots=True)
class MailgunDomain:
    name: str
    state: str | None
    sending: list[MailgunDnsRecord]
    receiving: list[MailgunDnsRecord]


class MailgunDomains:
    def __init__(self, api_url: str, api_key: str, client: httpx.AsyncClient | None = None, *, timeout: float = 15.0):
        self._base = api_url.rstrip("/").removesuffix("/v3") + "/v4/domains"
        self._auth = httpx.BasicAuth("api", api_key)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:  # never show the key
        return f"MailgunDomains({self._base!r})"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def get(self, name: str) -> MailgunDomain | None:
        """The domain, or None when Mailgun does not know it."""
        response = await self._call("GET", f"{self._base}/{quote(name, safe='')}")
        if response.status_code == 404:
            return None
        return _domain(name, _checked(response))

    async def ensure(self, name: str) -> MailgunDomain:
        found = await self.get(name)
        if found is not None:
            return found
        response = await self._call("POST", self._base, data={"name": name})
        return _domain(name, _checked(response))

    async def verify(self, name: str) -> MailgunDomain:
        response = await self._call("PUT", f"{self._base}/{quote(name, safe='')}/verify")
        return _domain(name, _checked(response))

    async def _call(self, method: str, url: str, data: dict[str, str] | None = None) -> httpx.Response:
        try:
            return await self._client.request(method, url, data=data, auth=self._auth)
        except httpx.TimeoutException as exc:
            raise MailgunDomainsError(f"Mailgun did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise MailgunDomainsError(f"cannot reach Mailgun: {exc}") from exc


def _checked(response: httpx.Response) -> dict[str, Any]:
    status = response.status_code
    if status == 200:
        return json_object(response)
    if status in (401, 403):
        raise MailgunDomainsError(f"Mailgun refused the API key ({status})")
    message = json_object(response).get("message") or response.text.strip()[:200] or response.reason_phrase
    raise MailgunDomainsError(f"Mailgun answered {status}: {message}")


def _domain(name: str, body: dict[str, Any]) -> MailgunDomain:
    domain = body.get("domain") if isinstance(body.get("domain"), dict) else {}
    assert isinstance(domain, dict)
    return MailgunDomain(
        name=str(domain.get("name") or name),
        state=domain.get("state"),
        sending=_records(body.get("sending_dns_records"), name),
        receiving=_records(body.get("receiving_dns_records"), name),
    )


def _records(raw: Any, domain: str) -> list[MailgunDnsRecord]:
    records = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict) or not item.get("record_type") or not item.get("value"):
            continue
        priority = str(item.get("priority") or "")
        records.append(
            MailgunDnsRecord(
                # MX records come without a name: they belong to the domain itself.
                name=str(item.get("name") or domain),
                record_type=str(item["record_type"]).upper(),
                value=str(item["value"]),
                priority=int(priority) if priority.isdigit() else None,
                valid=item.get("valid"),
            )
        )
    return records
