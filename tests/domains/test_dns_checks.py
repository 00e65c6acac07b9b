"""DNS records compared the way DNS means them, asked of a real DNS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailroom.config import Settings, dns_server_addresses
from mailroom.domains.dns import DnsChecker, DnsRecord
from tests.support.dns_server import FakeDns, dns_server, free_port

KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"


@pytest.fixture
def dns() -> Iterator[FakeDns]:
    with dns_server(
        {
            ("Example.COM.", "TXT"): [
                "google-site-verification=abc",
                ["v=spf1 ip4:192.0.2.1 include:_spf.google.com ", "include:spf.relay.example ~all"],
            ],
            ("sel._domainkey.example.com", "TXT"): [["v=DKIM1; k=rsa; p=", KEY[:50], " ", KEY[50:]]],
            ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; rua=mailto:d@example.com"],
            ("email.example.com", "CNAME"): ["Track.Mailroom.Example."],
            ("example.com", "MX"): ["10 mxa.mailgun.org.", "20 mxb.mailgun.org."],
            ("twice.example.com", "TXT"): ["v=spf1 include:a.example ~all", "v=spf1 include:spf.relay.example ~all"],
        }
    ) as server:
        yield server


async def check(dns: FakeDns, name: str, kind: str, value: str) -> tuple[bool, str | None]:
    result = await DnsChecker(dns.address).check(DnsRecord(name, kind, value))
    return result.is_active, result.reason


async def test_spf_mechanism_is_found_inside_a_longer_record_split_in_strings(dns: FakeDns) -> None:
    assert await check(dns, "example.com", "TXT", "v=spf1 include:spf.relay.example ~all") == (True, None)
    assert await check(dns, "EXAMPLE.com.", "TXT", "v=spf1 include:_SPF.google.com -all") == (True, None)
    assert await check(dns, "example.com", "TXT", "v=spf1 include:mailgun.org ~all") == (
        False,
        "the SPF record lacks include:mailgun.org",
    )
    # Two SPF records make receivers answer PermError: the domain's SPF is broken whatever they hold.
    assert (await check(dns, "twice.example.com", "TXT", "v=spf1 include:spf.relay.example ~all"))[0] is False


async def test_dkim_key_is_compared_without_whitespace_or_tag_order(dns: FakeDns) -> None:
    assert await check(dns, "sel._domainkey.example.com", "TXT", f"k=rsa; p={KEY}") == (True, None)
    assert await check(dns, "sel._domainkey.example.com", "TXT", f"v=DKIM1; k=rsa; p={KEY[:-1]}X") == (
        False,
        "the DKIM record holds another key",
    )
    assert await check(dns, "other._domainkey.example.com", "TXT", f"v=DKIM1; p={KEY}") == (
        False,
        "no TXT record at other._domainkey.example.com",
    )


async def test_dmarc_is_present_whatever_its_policy(dns: FakeDns) -> None:
    assert await check(dns, "_dmarc.example.com", "TXT", "v=DMARC1; p=none") == (True, None)
    assert await check(dns, "_dmarc.example.com.", "TXT", "v=DMARC1; p=none") == (True, None)


async def test_cname_and_mx_targets_ignore_trailing_dots_and_case(dns: FakeDns) -> None:
    assert await check(dns, "email.example.com", "CNAME", "track.mailroom.example") == (True, None)
    assert await check(dns, "email.example.com", "CNAME", "mailgun.org") == (
        False,
        "email.example.com points to track.mailroom.example",
    )
    assert await check(dns, "example.com", "MX", "mxb.mailgun.org") == (True, None)
    assert await check(dns, "example.com", "MX", "10 MXA.mailgun.org.") == (True, None)
    assert (await check(dns, "example.com", "MX", "mx.other.example"))[0] is False


async def test_missing_name_and_missing_type(dns: FakeDns) -> None:
    assert await check(dns, "nowhere.example.com", "TXT", "v=DMARC1; p=none") == (
        False,
        "no TXT record at nowhere.example.com",
    )
    assert await check(dns, "email.example.com", "MX", "mxa.mailgun.org") == (
        False,
        "no MX record at email.example.com",
    )


async def test_exact_txt_values_compare_whitespace_runs_as_one_space(dns: FakeDns) -> None:
    assert await check(dns, "example.com", "TXT", "google-site-verification=abc") == (True, None)
    assert (await check(dns, "example.com", "TXT", "google-site-verification=xyz"))[0] is False


async def test_an_unreachable_server_is_a_reason_not_an_exception() -> None:
    result = await DnsChecker(f"127.0.0.1:{free_port()}", timeout=0.3).check(
        DnsRecord("example.com", "TXT", "v=DMARC1; p=none")
    )
    assert (result.is_active, result.answered) == (False, False)
    assert result.reason is not None and "example.com" in result.reason


async def test_both_udp_and_tcp_answer(dns: FakeDns) -> None:
    # A long answer (a 2048-bit DKIM key next to other TXT records) comes back truncated over UDP and
    # is asked again over TCP.
    dns.records[("big.example.com", "TXT")] = [f"v=DKIM1; k=rsa; p={KEY * 6}"] + [f"filler-{i}" * 20 for i in range(8)]
    assert await check(dns, "big.example.com", "TXT", f"v=DKIM1; k=rsa; p={KEY * 6}") == (True, None)
    assert dns.over_tcp == [("big.example.com", "TXT")]


def test_dns_servers_setting() -> None:
    assert dns_server_addresses("192.0.2.53, 192.0.2.54:5353,[2001:db8::1]:53,2001:db8::2") == [
        ("192.0.2.53", 53),
        ("192.0.2.54", 5353),
        ("2001:db8::1", 53),
        ("2001:db8::2", 53),
    ]
    for bad in ("resolver.example", "192.0.2.1:0", "192.0.2.1:x", " , "):
        with pytest.raises(ValueError):
            Settings(dns_servers=bad)
    with pytest.raises(ValueError, match="domain"):
        Settings(mailgun_domain_pattern="rechat-mail.example.com")
