"""A local HTTP server speaking Mailgun's domains API (``/v4/domains``), recording every request.

    with mailgun_domains_server(api_key="key-1") as mg:
        ...  # MAILROOM_MAILGUN_API_URL=mg.url
        assert mg.requests[0].method == "GET"

Like Mailgun it checks basic auth (``api:KEY``, else 401 "Forbidden"), answers 404 ``{"message":
"Domain not found"}`` for a domain it does not know, creates one on ``POST /v4/domains`` (form field
``name``; 400 when missing or taken) and answers a domain as ``{"domain": {...}, "sending_dns_records":
[...], "receiving_dns_records": [...]}``: SPF and DKIM TXT records and the tracking CNAME, and two MX
records. ``state`` turns "active" when ``PUT /v4/domains/{name}/verify`` is called. ``fail_next``
makes the next N requests answer with a chosen status.
"""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.support.http_server import serve_routes
from tests.support.mailgun_server import FakeMailgun

SPF = "v=spf1 include:mailgun.org ~all"
DKIM_SELECTOR = "pic"
MX_HOSTS = ("mxa.mailgun.org", "mxb.mailgun.org")
TRACKING_TARGET = "mailgun.org"


def dkim_value(name: str) -> str:
    """The DKIM record Mailgun asks ``name`` to publish: a key of its own per domain."""
    return "k=rsa; p=" + base64.b64encode(hashlib.sha512(name.encode()).digest() * 3).decode()


@dataclass
class DomainsRequest:
    method: str
    path: str
    fields: dict[str, str]
    status: int = 0


@dataclass
class FakeMailgunDomains:
    api_key: str
    url: str = ""
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[DomainsRequest] = field(default_factory=list)
    _failures: deque[tuple[int, Any]] = field(default_factory=deque)
    # Called with the name of each domain created (the messages fake then accepts mail for it).
    on_create: Callable[[str], None] | None = None

    def fail_next(self, count: int, status: int, body: Any = None) -> None:
        self._failures.extend([(status, body or {"message": f"error {status}"})] * count)

    def answer(self, name: str, message: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "domain": self.domains[name],
            "receiving_dns_records": [
                {"cached": [], "is_active": True, "priority": "10", "record_type": "MX", "valid": "unknown",
                 "value": host}
                for host in MX_HOSTS
            ],
            "sending_dns_records": [
                {"cached": [], "is_active": True, "name": name, "record_type": "TXT", "valid": "unknown",
                 "value": SPF},
                {"cached": [], "is_active": True, "name": f"{DKIM_SELECTOR}._domainkey.{name}", "record_type": "TXT",
                 "valid": "unknown", "value": dkim_value(name)},
                {"cached": [], "is_active": False, "name": f"email.{name}", "record_type": "CNAME",
                 "valid": "unknown", "value": TRACKING_TARGET},
            ],
        }  # fmt: skip
        if message:
            body["message"] = message
        return body

    def _authorized(self, request: Request) -> bool:
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        return request.headers.get("authorization") == expected

    async def handle(self, request: Request) -> Response:
        form = await request.form() if request.method == "POST" else None
        recorded = DomainsRequest(
            request.method, request.url.path, {k: str(v) for k, v in (form.multi_items() if form else [])}
        )
        self.requests.append(recorded)
        response = self._answer(request, recorded)
        recorded.status = response.status_code
        return response

    def _answer(self, request: Request, req: DomainsRequest) -> Response:
        if not self._authorized(request):
            return PlainTextResponse("Forbidden", status_code=401)
        if self._failures:
            status, body = self._failures.popleft()
            return JSONResponse(body, status_code=status)
        if req.method == "POST":
            name = req.fields.get("name", "").strip().lower()
            if not name:
                return JSONResponse({"message": "Missing parameter 'name'"}, status_code=400)
            if name in self.domains:
                return JSONResponse({"message": "This domain name is already taken"}, status_code=400)
            self.domains[name] = {
                "created_at": formatdate(usegmt=True), "id": hashlib.md5(name.encode()).hexdigest()[:24],
                "is_disabled": False, "name": name, "require_tls": False, "skip_verification": False,
                "smtp_login": f"postmaster@{name}", "spam_action": "disabled", "state": "unverified",
                "type": "custom", "web_prefix": "email", "web_scheme": "https", "wildcard": False,
            }  # fmt: skip
            if self.on_create is not None:
                self.on_create(name)
            return JSONResponse(self.answer(name, "Domain DNS records have been created"))
        name = request.path_params["name"].lower()
        if name not in self.domains:
            return JSONResponse({"message": "Domain not found"}, status_code=404)
        if req.method == "PUT":
            self.domains[name]["state"] = "active"
            return JSONResponse(self.answer(name, "Domain DNS records have been updated"))
        return JSONResponse(self.answer(name))


@contextmanager
def mailgun_domains_server(
    *, api_key: str = "key-test", domains: set[str] | None = None
) -> Iterator[tuple[FakeMailgunDomains, FakeMailgun]]:
    """Serve a fake Mailgun, its domains API and its messages API on one free loopback port, for the
    duration of the block. ``domains`` are the ones it sends for already; it sends for those created too."""
    messages = FakeMailgun(api_key, set(domains or {"mg.example.com"}))
    fake = FakeMailgunDomains(api_key, on_create=messages.domains.add)
    routes = [
        Route("/v4/domains", fake.handle, methods=["POST"]),
        Route("/v4/domains/{name}", fake.handle, methods=["GET"]),
        Route("/v4/domains/{name}/verify", fake.handle, methods=["PUT"]),
        Route("/v3/{domain}/messages", messages.handle, methods=["POST"]),
        Route("/v3/{domain}/messages.mime", messages.handle, methods=["POST"]),
    ]
    with serve_routes(routes, name="Mailgun") as url:
        fake.url = messages.url = url
        yield fake, messages
