"""A real DNS server (dnslib) on a free loopback port, UDP and TCP, answering from a dict the test changes.

    with dns_server({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=none"]}) as dns:
        settings = Settings(dns_servers=dns.address, ...)
        dns.records[("example.com", "MX")] = ["10 mxa.mailgun.org"]

Names are matched without their trailing dot and in any case. A TXT value may be a list of strings: one
record made of several character-strings, as long DKIM keys are published. A name with records of
other types answers NOERROR with no data; an unknown name answers NXDOMAIN. An answer over 512 bytes
comes back truncated over UDP, as from a server without EDNS.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dnslib import CNAME, MX, QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

UDP_LIMIT = 512
Records = dict[tuple[str, str], list[Any]]


def _key(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass
class FakeDns(BaseResolver):
    records: Records = field(default_factory=dict)
    port: int = 0
    questions: list[tuple[str, str]] = field(default_factory=list)
    over_tcp: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        """What MAILROOM_DNS_SERVERS takes."""
        return f"127.0.0.1:{self.port}"

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = _key(str(request.q.qname))
        kind = QTYPE[request.q.qtype]
        with self._lock:
            self.questions.append((name, kind))
            if handler.protocol == "tcp":
                self.over_tcp.append((name, kind))
            matching = [(t, v) for (n, t), v in self.records.items() if _key(n) == name]
        values = next((v for t, v in matching if t == kind), None)
        if values is None:
            if not matching:
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in values:
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=_rdata(kind, value), ttl=60))
        if handler.protocol == "udp" and len(reply.pack()) > UDP_LIMIT:
            # Too long for UDP without EDNS: the question answered with TC set, to be asked again over TCP.
            reply = request.reply()
            reply.header.tc = 1
        return reply


def _rdata(kind: str, value: Any) -> Any:
    if kind == "TXT":
        # One character-string holds at most 255 bytes: a longer value is split, as DNS providers do.
        strings = value if isinstance(value, list) else [value[i : i + 255] for i in range(0, len(value), 255)]
        return TXT([s.encode() for s in strings])
    if kind == "CNAME":
        return CNAME(value)
    if kind == "MX":
        priority, _, host = str(value).partition(" ")
        return MX(host, int(priority))
    raise ValueError(f"no test records of type {kind}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def dns_server(records: Records | None = None) -> Iterator[FakeDns]:
    fake = FakeDns(dict(records or {}))
    logger = DNSLogger(logf=lambda _: None)
    for _ in range(20):  # the UDP port must be free for TCP too
        udp = DNSServer(fake, address="127.0.0.1", port=0, logger=logger)
        fake.port = udp.server.server_address[1]
        try:
            tcp = DNSServer(fake, address="127.0.0.1", port=fake.port, tcp=True, logger=logger)
        except OSError:
            udp.server.server_close()
            continue
        break
    else:
        raise RuntimeError("no free port for both UDP and TCP")
    # Not DNSServer.start_thread: its serve_forever looks for a stop every 0.5 s, a second per test to stop both.
    for server in (udp, tcp):
        threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield fake
    finally:
        for server in (udp, tcp):
            server.server.shutdown()
            server.server.server_close()
