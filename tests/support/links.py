"""What attachment links meet in tests: an HTTP file server on loopback, and the resolver's answers.

    with file_server({"/flyer.pdf": PDF}) as server:
        fake_dns(monkeypatch, {"files.example.test": ["127.0.0.1"]})
        ... fetch(f"http://files.example.test:{server.port}/flyer.pdf", ...)
        assert server.requests[0].host == f"files.example.test:{server.port}"

The server records every request (path, Host header, TLS server name) before answering. Besides
plain files it serves two misbehaviours: ``Trickle`` (a body one small piece at a time) and
``Oversized`` (a Content-Length far beyond what it sends). ``fake_dns`` replaces the system resolver
for chosen names, as a DNS server under someone else's control would answer them.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from typing import Any

import pytest


@dataclass(frozen=True)
class Trickle:
    """``size`` bytes declared, sent ``piece`` bytes every ``every`` seconds."""

    size: int
    piece: int = 1
    every: float = 0.25


@dataclass(frozen=True)
class Oversized:
    """Content-Length ``declared`` with only a few bytes sent, then the connection held open."""

    declared: int


@dataclass(frozen=True)
class Seen:
    path: str
    host: str | None
    server_name: str | None  # the TLS SNI name, when the request came over TLS


@dataclass
class FileServer:
    port: int
    scheme: str
    requests: list[Seen] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def url(self, host: str, path: str) -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


@contextmanager
def file_server(
    files: Mapping[str, bytes | Trickle | Oversized],
    *,
    content_type: str = "application/pdf",
    tls: ssl.SSLContext | None = None,
) -> Iterator[FileServer]:
    """An HTTP(S) server on 127.0.0.1 answering ``files`` by path and 404 otherwise."""
    names: dict[int, str | None] = {}  # socket fileno -> SNI name seen in its handshake
    state: dict[str, FileServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server = state["server"]
            server.requests.append(Seen(self.path, self.headers.get("Host"), names.get(self.connection.fileno())))
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            if isinstance(body, bytes):
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif isinstance(body, Trickle):
                self.send_header("Content-Length", str(body.size))
                self.end_headers()
                for _ in range(0, body.size, body.piece):
                    if server.stopping.wait(body.every):
                        return
                    self.wfile.write(b"x" * body.piece)
                    self.wfile.flush()
            else:
                self.send_header("Content-Length", str(body.declared))
                self.end_headers()
                self.wfile.write(b"%PDF-1.4 ")
                self.wfile.flush()
                server.stopping.wait(60)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:

        def remember(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
            names[sock.fileno()] = name  # type: ignore[union-attr]

        tls.sni_callback = remember
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    server = FileServer(httpd.server_address[1], "https" if tls else "http")
    state["server"] = server
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        httpd.shutdown()
        httpd.server_close()


Answer = Sequence[str] | Callable[[int], Sequence[str]]


class FakeDns:
    """Answers for chosen names; ``calls[name]`` counts how often each was asked."""

    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = {name.lower(): answer for name, answer in answers.items()}
        self.calls: dict[str, int] = {}

    def lookup(self, host: str) -> Sequence[str] | None:
        name = host.lower().rstrip(".")
        answer = self.answers.get(name)
        if answer is None:
            return None
        count = self.calls[name] = self.calls.get(name, 0) + 1
        return answer(count) if callable(answer) else answer


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: Mapping[str, Answer]) -> FakeDns:
    """Make the system resolver (``socket.getaddrinfo``, which asyncio and httpx use) answer
    ``answers`` for those names: a list of addresses, or a function of the call number (1, 2, ...)."""
    dns = FakeDns(answers)
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        found = dns.lookup(host.decode() if isinstance(host, bytes) else str(host)) if host else None
        if found is None:
            return real(host, port, family, type, proto, flags)
        number = int(port) if port else 0
        infos: list[Any] = []
        for text in found:
            address = ip_address(text)
            if address.version == 4:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, number)))
            else:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, number, 0, 0)))
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return dns
