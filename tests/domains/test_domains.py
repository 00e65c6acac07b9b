"""PUT /emails/domain/verify and GET /emails/domain against a local DNS server and a local Mailgun."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.crypto import SecretBox
from mailroom.domains.dns import DnsChecker
from mailroom.domains.models import SendingDomain
from mailroom.domains.service import recheck_domains
from tests.support.dns_server import FakeDns, dns_server, free_port
from tests.support.domains import app_settings
from tests.support.mailgun_domains_server import DKIM_SELECTOR, MX_HOSTS, SPF, dkim_value, mailgun_domains_server
from tests.support.world import Actor, World

DOMAIN = "brokerage.example"
SMTP = {"transport": "smtp", "smtp_url": "smtp://127.0.0.1:1", "spf_include": "include:spf.relay.example",
        "tracking_host": "track.mailroom.example", "dkim_selector": "mr2026"}  # fmt: skip


async def agent(world: World, email: str = f"jo@{DOMAIN}", *, confirmed: bool = True) -> Actor:
    admin = await world.brand_admin()
    return await world.member(admin, email=email, confirmed=confirmed)


async def verify_list(actor: Actor) -> list[dict[str, Any]]:
    response = await actor.put("/emails/domain/verify")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["info"]["count"] == len(answer["data"])
    assert all(set(r) == {"is_active", "name", "record_type", "desired_value", "reason"} for r in answer["data"])
    records: list[dict[str, Any]] = answer["data"]
    return records


async def verify(actor: Actor) -> dict[tuple[str, str], dict[str, Any]]:
    """The verify answer by (record type, name), for records of which there is one of each."""
    return {(r["record_type"], r["name"]): r for r in await verify_list(actor)}


async def stored(session: AsyncSession, domain: str = DOMAIN) -> SendingDomain:
    session.expire_all()
    found = await session.get(SendingDomain, await _id(session, domain))
    assert found is not None
    return found


async def _id(session: AsyncSession, domain: str) -> uuid.UUID:
    found = await session.execute(text("SELECT id FROM sending_domains WHERE domain = :d"), {"d": domain})
    return found.scalar_one()


def publish_own(dns: FakeDns, records: Any) -> None:
    """Publish what the verify answer asked for, the way people do: a long DKIM key split in strings,
    the SPF mechanism among others, names with a trailing dot and in other cases."""
    dkim = records[("TXT", f"mr2026._domainkey.{DOMAIN}")]["desired_value"]
    dns.records.update(
        {
            (f"{DOMAIN}.", "TXT"): ["google-site-verification=abc", "v=spf1 mx include:spf.relay.example -all"],
            (f"MR2026._domainkey.{DOMAIN.upper()}", "TXT"): [[dkim[:200], dkim[200:]]],
            (f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=quarantine; rua=mailto:dmarc@brokerage.example"],
            (f"email.{DOMAIN}", "CNAME"): ["TRACK.mailroom.example."],
        }
    )


async def test_smtp_domain_is_enabled_once_its_records_are_published_and_disabled_when_one_goes_wrong(
    world: World, app: FastAPI, session: AsyncSession, settings: Settings
) -> None:
    jo = await agent(world)
    with dns_server() as dns, app_settings(app, dns_servers=dns.address, **SMTP):
        records = await verify(jo)
        assert set(records) == {
            ("TXT", DOMAIN),
            ("TXT", f"mr2026._domainkey.{DOMAIN}"),
            ("TXT", f"_dmarc.{DOMAIN}"),
            ("CNAME", f"email.{DOMAIN}"),
        }
        assert records[("TXT", DOMAIN)]["desired_value"] == "v=spf1 include:spf.relay.example ~all"
        assert records[("TXT", f"_dmarc.{DOMAIN}")]["desired_value"] == "v=DMARC1; p=none"
        assert records[("CNAME", f"email.{DOMAIN}")]["desired_value"] == "track.mailroom.example"
        assert all(not r["is_active"] for r in records.values())
        assert records[("TXT", f"_dmarc.{DOMAIN}")]["reason"] == f"no TXT record at _dmarc.{DOMAIN}"

        row = await stored(session)
        assert (row.provider, row.esp_domain, row.enabled_at, row.dkim_selector) == ("smtp", None, None, "mr2026")
        # The private key is kept encrypted, and the published key is its public half (2048 bits).
        assert row.dkim_private_key is not None and b"PRIVATE KEY" not in row.dkim_private_key
        pem = SecretBox(settings.resolved_secret_key()).decrypt(row.dkim_private_key)
        assert pem is not None
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        dkim = records[("TXT", f"mr2026._domainkey.{DOMAIN}")]["desired_value"]
        assert dkim.replace(" ", "") == "v=DKIM1;k=rsa;p=" + base64.b64encode(public).decode()
        assert key.key_size == 2048  # type: ignore[union-attr]

        answer = jo.data(await jo.get("/emails/domain"))
        assert answer == {
            "id": str(row.id),
            "mailgun_domain": None,
            "domain": DOMAIN,
            "created_at": answer["created_at"],
            "enabled_at": None,
            "risks": "{unknown}",
        }
        assert abs(datetime.fromisoformat(answer["created_at"]) - row.created_at) < timedelta(milliseconds=1)

        publish_own(dns, records)
        again = await verify(jo)
        assert all(r["is_active"] and r["reason"] is None for r in again.values()), again
        # The key is made once: verifying again asks for the same record.
        assert again[("TXT", f"mr2026._domainkey.{DOMAIN}")]["desired_value"] == dkim
        enabled = jo.data(await jo.get("/emails/domain"))["enabled_at"]
        assert enabled is not None
        row = await stored(session)
        assert row.enabled_at is not None and row.checked_at is not None
        assert [r["is_active"] for r in row.records] == [True] * 4

        # Someone replaces the DKIM key with another one: the domain stops being used, with the reason.
        dns.records[(f"MR2026._domainkey.{DOMAIN.upper()}", "TXT")] = [dkim_value("other")]
        broken = await verify(jo)
        assert not broken[("TXT", f"mr2026._domainkey.{DOMAIN}")]["is_active"]
        assert broken[("TXT", f"mr2026._domainkey.{DOMAIN}")]["reason"] == "the DKIM record holds another key"
        row = await stored(session)
        assert row.enabled_at is None and row.disabled_at is not None
        assert row.disabled_reason == f"TXT mr2026._domainkey.{DOMAIN}: the DKIM record holds another key"
        assert jo.data(await jo.get("/emails/domain"))["enabled_at"] is None


# Waits out the resolver's timeout on a server that never answers: about 5 s.
@pytest.mark.slow
async def test_an_unreachable_dns_server_answers_inactive_records_and_keeps_an_enabled_domain(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    jo = await agent(world)
    with dns_server() as dns, app_settings(app, dns_servers=dns.address, **SMTP):
        publish_own(dns, await verify(jo))
        assert all(r["is_active"] for r in (await verify(jo)).values())
    # Nothing listens on this port any more.
    with app_settings(app, dns_servers=f"127.0.0.1:{free_port()}", **SMTP):
        records = await verify(jo)
    assert all(not r["is_active"] for r in records.values())
    assert all("did not answer" in r["reason"] or "could not" in r["reason"] for r in records.values()), records
    # Not knowing is not the same as wrong: the domain stays enabled.
    assert (await stored(session)).enabled_at is not None


async def test_mailgun_domain_is_created_there_and_its_records_checked(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    jo = await agent(world)
    name = f"rechat-mail.{DOMAIN}"
    with mailgun_domains_server() as (mg, _), dns_server() as dns:
        changes = {"transport": "mailgun", "mailgun_api_url": mg.url, "mailgun_api_key": "key-test",
                   "mailgun_domain": "mg.example.com", "dns_servers": dns.address}  # fmt: skip
        with app_settings(app, **changes):
            listed = await verify_list(jo)
            # Looked up, then created with the name pattern, as Mailgun's API takes it.
            assert [(r.method, r.path, r.fields) for r in mg.requests] == [
                ("GET", f"/v4/domains/{name}", {}),
                ("POST", "/v4/domains", {"name": name}),
            ]
            assert [(r["record_type"], r["name"], r["desired_value"]) for r in listed] == [
                ("TXT", name, SPF),
                ("TXT", f"{DKIM_SELECTOR}._domainkey.{name}", dkim_value(name)),
                ("CNAME", f"email.{name}", "mailgun.org"),
                ("MX", name, MX_HOSTS[0]),
                ("MX", name, MX_HOSTS[1]),
            ]
            assert not any(r["is_active"] for r in listed)
            answer = jo.data(await jo.get("/emails/domain"))
            assert (answer["mailgun_domain"], answer["domain"], answer["enabled_at"]) == (name, DOMAIN, None)

            dns.records.update(
                {
                    (name, "TXT"): [SPF],
                    (f"{DKIM_SELECTOR}._domainkey.{name}", "TXT"): [dkim_value(name)],
                    (f"email.{name}", "CNAME"): ["mailgun.org"],
                }
            )
            mg.requests.clear()
            listed = await verify_list(jo)
            # MX records are asked for but do not decide whether the domain may send.
            assert [r["record_type"] for r in listed if not r["is_active"]] == ["MX", "MX"]
            # Mailgun is told to look at the DNS again once everything it needs is there.
            assert [(r.method, r.path) for r in mg.requests] == [
                ("GET", f"/v4/domains/{name}"),
                ("PUT", f"/v4/domains/{name}/verify"),
            ]
            assert mg.domains[name]["state"] == "active"
            assert jo.data(await jo.get("/emails/domain"))["enabled_at"] is not None
            row = await stored(session)
            assert (row.provider, row.dkim_private_key) == ("mailgun", None)

            mg.fail_next(1, 401)
            response = await jo.put("/emails/domain/verify")
            assert response.status_code == 502
            assert "key-test" not in response.text and "Mailgun" in response.json()["message"]


async def test_the_records_mailgun_asks_for_are_the_ones_looked_up(world: World, app: FastAPI) -> None:
    jo = await agent(world)
    with mailgun_domains_server() as (mg, _), dns_server() as dns:
        changes = {"transport": "mailgun", "mailgun_api_url": mg.url, "mailgun_api_key": "key-test",
                   "mailgun_domain": "mg.example.com", "dns_servers": dns.address}  # fmt: skip
        with app_settings(app, **changes):
            await verify(jo)
    assert sorted(set(dns.questions)) == sorted(
        {(f"rechat-mail.{DOMAIN}", "TXT"), (f"pic._domainkey.rechat-mail.{DOMAIN}", "TXT"),
         (f"email.rechat-mail.{DOMAIN}", "CNAME"), (f"rechat-mail.{DOMAIN}", "MX")}
    )  # fmt: skip


async def test_free_mailbox_domains_are_refused(world: World, app: FastAPI, session: AsyncSession) -> None:
    for address in ("someone@gmail.com", "someone@Outlook.com"):
        user = await agent(world, address)
        with app_settings(app, **SMTP):
            response = await user.put("/emails/domain/verify")
        assert response.status_code == 400
        assert "use the mailbox connection instead" in response.json()["message"]
    assert (await session.execute(text("SELECT count(*) FROM sending_domains"))).scalar_one() == 0


async def test_an_unconfirmed_address_is_refused(world: World, session: AsyncSession) -> None:
    pending = await agent(world, confirmed=False)
    for response in (await pending.put("/emails/domain/verify"), await pending.get("/emails/domain")):
        assert response.status_code == 400
        assert response.json()["message"].startswith("email: confirm your email address")
    assert (await session.execute(text("SELECT count(*) FROM sending_domains"))).scalar_one() == 0


async def test_no_domain_set_up_is_404(world: World) -> None:
    jo = await agent(world)
    response = await jo.get("/emails/domain")
    assert response.status_code == 404
    assert response.json() == {
        "code": "ResourceNotFound",
        "message": f"domain: no sending domain is set up for {DOMAIN}",
    }


async def test_daily_recheck_disables_a_domain_whose_records_went_away(
    world: World, app: FastAPI, session: AsyncSession, settings: Settings
) -> None:
    jo = await agent(world)
    other = await agent(world, "lee@other-brokerage.example")
    with dns_server() as dns, app_settings(app, dns_servers=dns.address, **SMTP) as changed:
        publish_own(dns, await verify(jo))
        await verify(jo)
        await verify(other)
        assert (await stored(session)).enabled_at is not None
        dns.records.pop((f"_dmarc.{DOMAIN}", "TXT"))
        box = SecretBox(settings.resolved_secret_key())
        async with app.state.sessionmaker() as s, s.begin():
            # Checked moments ago: not due yet.
            assert await recheck_domains(s, settings=changed, box=box) == 0
        await session.execute(update(SendingDomain).values(checked_at=datetime.now(UTC) - timedelta(days=1, minutes=1)))
        await session.commit()
        async with app.state.sessionmaker() as s, s.begin():
            assert await recheck_domains(s, settings=changed, box=box, dns=DnsChecker(dns.address)) == 2
    row = await stored(session)
    assert row.enabled_at is None
    assert row.disabled_reason == f"TXT _dmarc.{DOMAIN}: no TXT record at _dmarc.{DOMAIN}"
    assert (await stored(session, "other-brokerage.example")).checked_at > datetime.now(UTC) - timedelta(minutes=1)  # type: ignore[operator]
