"""Mail From an enabled sending domain: DKIM-signed through SMTP, sent through its Mailgun domain on Mailgun."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any

import dkim
import dns.name
import dns.resolver
from fastapi import FastAPI

from mailroom.config import Settings
from tests.support.campaigns import due_now
from tests.support.dns_server import FakeDns, dns_server
from tests.support.domains import app_settings
from tests.support.mailgun_domains_server import DKIM_SELECTOR, SPF, dkim_value, mailgun_domains_server
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import Actor, World

DOMAIN = "brokerage.example"


def txt_lookup(server: FakeDns) -> Any:
    """dkimpy's DNS function, asking the test DNS server (over the network, like a receiver would)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(dns.name.from_text(name.decode()), "TXT", search=False)
        except dns.resolver.NXDOMAIN:
            return None
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


async def schedule_from(
    admin: Actor, sender: Actor, *to: str, path: str = "/emails/individual", html: str = "<p>Hello</p>"
) -> str:
    body = {
        "from": str(sender.user),
        "subject": "Open house on Sunday",
        "html": html,
        "to": [{"recipient_type": "Email", "email": address} for address in to],
        "due_at": due_now(),
    }
    campaign: str = admin.data(await admin.post(path, body))["id"]
    return campaign


async def test_mail_from_an_enabled_domain_is_dkim_signed_through_smtp(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    jo = await world.member(admin, email=f"jo@{DOMAIN}")
    with dns_server() as server:
        with app_settings(app, dns_servers=server.address, transport="smtp", smtp_url="smtp://127.0.0.1:1"):
            records = {(r["record_type"], r["name"]): r for r in jo.data(await jo.put("/emails/domain/verify"))}
            dkim_record = records[("TXT", f"mailroom._domainkey.{DOMAIN}")]["desired_value"]
            server.records[(f"mailroom._domainkey.{DOMAIN}", "TXT")] = [dkim_record]
            server.records[(f"_dmarc.{DOMAIN}", "TXT")] = ["v=DMARC1; p=none"]
            assert all(r["is_active"] for r in jo.data(await jo.put("/emails/domain/verify")))
        signed = await schedule_from(admin, jo, "ann@example.com", html="<p>Hello {{recipient.first_name}}</p>")
        # The admin's own domain (example.com) is not set up: that mail goes out unsigned.
        unsigned = await schedule_from(admin, admin, "bob@example.com")
        # One message to several people is signed the same way.
        shared = await schedule_from(admin, jo, "cy@example.com", "di@example.com", path="/emails")
        with smtp_server() as smtp:
            async with running_worker(settings, transport="smtp", smtp_url=smtp.url):
                for campaign in (signed, unsigned, shared):
                    await wait_until_sent(app.state.sessionmaker, campaign)
        by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
        mail = by_rcpt["ann@example.com"]
        assert parseaddr(mail.message["From"])[1] == f"jo@{DOMAIN}"
        assert mail.message["Message-ID"].endswith(f"@{DOMAIN}>")
        signature = mail.message["DKIM-Signature"]
        tags = {k.strip(): v.strip() for k, _, v in (t.partition("=") for t in signature.split(";"))}
        assert (tags["d"], tags["s"], tags["c"], tags["a"]) == (DOMAIN, "mailroom", "relaxed/relaxed", "rsa-sha256")
        assert {"from", "to", "subject", "date", "message-id"} <= {h.strip().lower() for h in tags["h"].split(":")}
        lookup = txt_lookup(server)
        assert dkim.verify(mail.raw, dnsfunc=lookup)
        # A changed subject no longer verifies: the signature covers it.
        assert not dkim.verify(mail.raw.replace(b"Open house on Sunday", b"Open house on Monday"), dnsfunc=lookup)
        assert "DKIM-Signature" not in by_rcpt["bob@example.com"].message
        assert by_rcpt["cy@example.com"].rcpt_tos == ["cy@example.com", "di@example.com"]
        assert dkim.verify(by_rcpt["cy@example.com"].raw, dnsfunc=lookup)


async def test_mail_from_an_enabled_domain_goes_through_its_mailgun_domain(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    jo = await world.member(admin, email=f"jo@{DOMAIN}")
    name = f"rechat-mail.{DOMAIN}"
    with mailgun_domains_server() as (domains, messages), dns_server() as server:
        mailgun = {"transport": "mailgun", "mailgun_api_url": domains.url, "mailgun_api_key": "key-test",
                   "mailgun_domain": "mg.example.com"}  # fmt: skip
        with app_settings(app, dns_servers=server.address, **mailgun):
            jo.data(await jo.put("/emails/domain/verify"))
            server.records.update(
                {
                    (name, "TXT"): [SPF],
                    (f"{DKIM_SELECTOR}._domainkey.{name}", "TXT"): [dkim_value(name)],
                    (f"email.{name}", "CNAME"): ["mailgun.org"],
                }
            )
            jo.data(await jo.put("/emails/domain/verify"))
            assert jo.data(await jo.get("/emails/domain"))["enabled_at"] is not None
        own = await schedule_from(admin, jo, "ann@example.com")
        other = await schedule_from(admin, admin, "bob@example.com")
        async with running_worker(settings, **mailgun):
            await wait_until_sent(app.state.sessionmaker, own)
            await wait_until_sent(app.state.sessionmaker, other)
    sent = {r.field("to"): r for r in messages.requests}
    assert sent["ann@example.com"].domain == name
    assert sent["ann@example.com"].field("from") == f"jo@{DOMAIN}"
    assert sent["ann@example.com"].field("h:Sender") == f"jo@{name}"
    # Mail From a domain that is not set up goes through the service's own Mailgun domain, with no Sender.
    assert sent["bob@example.com"].domain == "mg.example.com"
    assert "h:Sender" not in sent["bob@example.com"].fields


async def test_a_domain_enabled_or_disabled_while_the_worker_runs_counts_from_the_next_send(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    jo = await world.member(admin, email=f"jo@{DOMAIN}")
    with dns_server() as server, smtp_server() as smtp:
        smtp_settings = {"transport": "smtp", "smtp_url": smtp.url}
        async with running_worker(settings, **smtp_settings):
            # The worker has looked the domain up and found it not set up.
            before = await schedule_from(admin, jo, "ann@example.com")
            await wait_until_sent(app.state.sessionmaker, before)
            with app_settings(app, dns_servers=server.address, **smtp_settings):
                records = {(r["record_type"], r["name"]): r for r in jo.data(await jo.put("/emails/domain/verify"))}
                dkim_name = f"mailroom._domainkey.{DOMAIN}"
                server.records[(dkim_name, "TXT")] = [records[("TXT", dkim_name)]["desired_value"]]
                server.records[(f"_dmarc.{DOMAIN}", "TXT")] = ["v=DMARC1; p=none"]
                assert all(r["is_active"] for r in jo.data(await jo.put("/emails/domain/verify")))
            enabled = await schedule_from(admin, jo, "bob@example.com")
            await wait_until_sent(app.state.sessionmaker, enabled)
            with app_settings(app, dns_servers=server.address, **smtp_settings):
                del server.records[(dkim_name, "TXT")]
                jo.data(await jo.put("/emails/domain/verify"))
                assert jo.data(await jo.get("/emails/domain"))["enabled_at"] is None
            disabled = await schedule_from(admin, jo, "cy@example.com")
            await wait_until_sent(app.state.sessionmaker, disabled)
    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
    assert "DKIM-Signature" not in by_rcpt["ann@example.com"].message
    assert f"d={DOMAIN};" in by_rcpt["bob@example.com"].message.get("DKIM-Signature", "")
    assert "DKIM-Signature" not in by_rcpt["cy@example.com"].message
