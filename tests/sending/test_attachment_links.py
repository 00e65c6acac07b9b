"""Attachment links are fetched by the server: never from inside the network, never unbounded.

The resolver is replaced for test names (``tests.support.links.fake_dns``), as a DNS server under an
attacker's control would answer them; the files are served by a real HTTP(S) server on loopback.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.sending.attachments import AttachmentError, fetch
from tests.support.campaigns import assert_refused, campaign, schedule
from tests.support.links import Oversized, Trickle, fake_dns, file_server
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World

PDF = b"%PDF-1.4 flyer " + bytes(range(256)) * 40
LIMIT = 1_000_000
PUBLIC = "93.184.215.14"  # a globally routable address; nothing here listens on it


async def test_dns_rebinding_cannot_reach_a_loopback_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # The name is public when checked and loopback when looked up again to connect.
    dns = fake_dns(monkeypatch, {"files.rebind.test": lambda call: [PUBLIC] if call == 1 else ["127.0.0.1"]})
    with file_server({"/flyer.pdf": PDF}) as server:
        with pytest.raises((AttachmentError, httpx.HTTPError)):
            await fetch(server.url("files.rebind.test", "/flyer.pdf"), limit=LIMIT, allow_private=False, deadline=3)
        assert server.requests == []
    assert dns.calls["files.rebind.test"] == 1


async def test_the_connection_goes_to_the_checked_address_under_the_link_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dns = fake_dns(monkeypatch, {"files.example.test": ["127.0.0.1"]})
    with file_server({"/flyer.pdf": PDF}) as server:
        data, declared = await fetch(
            server.url("files.example.test", "/flyer.pdf"), limit=LIMIT, allow_private=True, deadline=10
        )
    assert (data, declared) == (PDF, "application/pdf")
    assert [(r.path, r.host) for r in server.requests] == [("/flyer.pdf", f"files.example.test:{server.port}")]
    assert dns.calls["files.example.test"] == 1


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a certificate for files.example.test only, client context trusting its CA)."""
    folder: Path = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "files")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("files.example.test")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


async def test_https_links_carry_the_host_name_in_sni_and_the_certificate_check(
    monkeypatch: pytest.MonkeyPatch, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, client_tls = tls_pair
    fake_dns(monkeypatch, {"files.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]})
    with file_server({"/flyer.pdf": PDF}, tls=server_tls) as server:
        data, _ = await fetch(
            server.url("files.example.test", "/flyer.pdf"), limit=LIMIT, allow_private=True, tls=client_tls
        )
        assert data == PDF
        assert server.requests[0].server_name == "files.example.test"
        # The certificate is checked against the link's name, not the address connected to.
        with pytest.raises(httpx.ConnectError, match="certificate"):
            await fetch(server.url("other.example.test", "/flyer.pdf"), limit=LIMIT, allow_private=True, tls=client_tls)
    assert len(server.requests) == 1


REFUSED_ANSWERS = [
    ["127.0.0.1"], ["10.1.2.3"], ["100.64.0.1"], ["169.254.169.254"], ["0.0.0.0"], ["224.0.0.1"],
    ["240.0.0.1"], ["::1"], ["fe80::1"], ["fc00::1"], ["::ffff:127.0.0.1"], ["::127.0.0.1"],
    ["64:ff9b::7f00:1"], ["2002:7f00:1::1"], [PUBLIC, "127.0.0.1"],
]  # fmt: skip


@pytest.mark.parametrize("answer", REFUSED_ANSWERS, ids=lambda a: "+".join(a))
async def test_a_name_resolving_to_any_refused_address_is_not_fetched(
    monkeypatch: pytest.MonkeyPatch, answer: list[str]
) -> None:
    fake_dns(monkeypatch, {"evil.example.test": answer})
    with file_server({"/flyer.pdf": PDF}) as server:
        with pytest.raises(AttachmentError, match="private address"):
            await fetch(server.url("evil.example.test", "/flyer.pdf"), limit=LIMIT, allow_private=False, deadline=3)
        assert server.requests == []


LITERALS = ["127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]", "[::1]", "localhost"]


@pytest.mark.parametrize("host", LITERALS)
async def test_loopback_in_any_spelling_is_not_fetched(host: str) -> None:
    with file_server({"/flyer.pdf": PDF}) as server:
        # 0177.0.0.1 is not even a URL to httpx; the others are loopback to any resolver.
        with pytest.raises(AttachmentError, match=r"private|not a valid URL"):
            await fetch(server.url(host, "/flyer.pdf"), limit=LIMIT, allow_private=False, deadline=3)
        assert server.requests == []


async def test_a_proxy_from_the_environment_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"files.example.test": ["127.0.0.1"]})
    with file_server({"/flyer.pdf": PDF}) as server, file_server({}) as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        data, _ = await fetch(server.url("files.example.test", "/flyer.pdf"), limit=LIMIT, allow_private=True)
    assert data == PDF
    assert proxy.requests == [] and len(server.requests) == 1


async def test_a_declared_length_over_the_limit_is_refused_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"files.example.test": ["127.0.0.1"]})
    # The server sends a few bytes and then nothing: a fetch that read on would end at its deadline,
    # with another reason.
    huge = {"/huge.pdf": Oversized(declared=10 * LIMIT)}
    with file_server(huge) as server, pytest.raises(AttachmentError, match="larger than"):
        await fetch(server.url("files.example.test", "/huge.pdf"), limit=LIMIT, allow_private=True, deadline=3)


@pytest.fixture
def loopback_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fake_dns(monkeypatch, {"files.example.test": ["127.0.0.1"]})
    yield


async def test_a_trickling_download_fails_the_campaign_at_the_overall_deadline(
    world: World, app: FastAPI, settings: Settings, loopback_files: None
) -> None:
    admin = await world.brand_admin()
    # 100 bytes at 4 a second: 25 s, though no single read ever waits longer than 0.25 s.
    with file_server({"/slow.pdf": Trickle(size=100, piece=1, every=0.25)}) as files, smtp_server() as smtp:
        made = await schedule(
            admin,
            to=[{"recipient_type": "Email", "email": "jane@example.com"}],
            attachments=[{"url": files.url("files.example.test", "/slow.pdf"), "name": "Slow.pdf"}],
        )
        overrides = {"allow_private_attachment_links": True, "attachment_fetch_timeout": 1.5}
        async with running_worker(settings, transport="smtp", smtp_url=smtp.url, **overrides):
            state = await wait_until_sent(app.state.sessionmaker, made["id"], within=15)
    assert state["failed_at"] is not None
    assert "did not download within 1.5 s" in state["failure"]
    assert smtp.messages == []


URLS = [
    "http://127.0.0.1/flyer.pdf", "http://2130706433/flyer.pdf", "http://0x7f.1/flyer.pdf",
    "http://[::ffff:127.0.0.1]/flyer.pdf", "http://[64:ff9b::a9fe:a9fe]/", "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.5/flyer.pdf", "http://100.64.0.1/", "http://[fd00::1]/", "http://localhost:8080/flyer.pdf",
    "http:///flyer.pdf", "https://example.com:99999/flyer.pdf", "http://LOCALHOST./flyer.pdf",
    "http://files.example.com/a\tb.pdf", "http://[fe80::1%25eth0]/flyer.pdf",
]  # fmt: skip


@pytest.mark.parametrize("url", URLS)
async def test_create_refuses_links_the_server_must_not_fetch(world: World, session: AsyncSession, url: str) -> None:
    admin = await world.brand_admin()
    body = campaign(attachments=[{"url": "https://example.com/a.pdf", "name": "A.pdf"}, {"url": url, "name": "B.pdf"}])
    await assert_refused(admin, session, body, "attachments.1.url")


async def test_an_edit_is_held_to_the_same_links(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    made = admin.data(await admin.post("/emails", campaign()))
    body = campaign(attachments=[{"url": "http://0x7f.1/flyer.pdf", "name": "A.pdf"}])
    response = await admin.put(f"/emails/{made['id']}", body)
    assert response.status_code == 400, response.text
    assert "attachments.0.url" in response.json()["message"]


async def test_operators_may_allow_private_links(world: World, app: FastAPI) -> None:
    admin = await world.brand_admin()
    before = app.state.settings
    # Starlette's State is not one pytest's monkeypatch can restore.
    app.state.settings = before.model_copy(update={"allow_private_attachment_links": True})
    try:
        body = campaign(attachments=[{"url": "http://10.0.0.5/flyer.pdf", "name": "Flyer.pdf"}])
        made = admin.data(await admin.post("/emails", body))
    finally:
        app.state.settings = before
    assert made["id"]
