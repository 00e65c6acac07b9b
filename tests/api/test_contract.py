"""Schemathesis against the live app: every documented operation, valid and invalid input, every check.

The app is a real one on the test database, called in process through schemathesis' ASGI client. That client
runs the app on an event loop of its own (one thread for the whole process), so this test builds its own app
rather than using the session's `app` fixture, whose database pools belong to the tests' loop.

Each operation gets schemathesis' coverage cases (boundary values, missing and malformed parameters, methods
the path does not take) and a bounded, derandomized Hypothesis search: valid input with the seeded ids
(so that answers with bodies are checked, not only 404s), valid input, and invalid input. Operations that
generated input rarely gets through also get one request known to succeed, whose answer is checked too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.auths import set_on_generated_case
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.python import asgi

from mailroom.app import create_app
from mailroom.config import Settings
from mailroom.crm import service
from mailroom.db import make_engine, make_sessionmaker, resolve_database_url

pytestmark = pytest.mark.contract

T = TypeVar("T")
Operation: TypeAlias = "schemathesis.APIOperation[Any, Any, Any, Any]"
Case: TypeAlias = "schemathesis.Case[Operation]"

# Generated inputs per operation: enough to reach each operation's validation branches, few enough that the
# whole run (with the coverage cases, a few thousand requests) stays well under two minutes on two cores.
MAX_EXAMPLES = 36

# Refusals of valid input that no schema can express: a rule about stored state, a signed token, the clock
# or two fields together. These operations may answer such input 400 (the message names the field).
UNEXPRESSIBLE_REFUSALS = {
    # Each member must be a contact of the brand.
    "POST /brands/{brand}/lists",
    "POST /brands/{brand}/lists/{list}/members",
    # expires_at must fall within ten years of now.
    "POST /users/self/tokens",
    # The CSV's columns must be ones mailroom knows: a text/csv body's schema is a string.
    "POST /brands/{brand}/contacts/import",
    # The state is a signed, one-time token mailroom issued; the GET needs code and state unless error is given.
    *(f"{method} /users/self/{kind}/callback" for method in ("GET", "POST") for kind in ("google", "microsoft")),
}

# Operations where only some refusals of valid input are unexpressible, told apart by the answer's message: a
# 400 whose message matches is one of them; any other refusal of valid input is still a failure.
_CAMPAIGN_REFUSALS = re.compile(
    "|".join(
        (
            # The brand is the body's or the X-Rechat-Brand header's: a rule across two places.
            r"brand: is required \(in the body or the X-Rechat-Brand header\)",
            r"brand: does not match the X-Rechat-Brand header",
            # What the campaign names must exist in its brand, and a replaced campaign stay what it is.
            r"(?:to|cc|bcc)\.\d+\.(?:contact|list|brand|agent): no such \w+ in this brand",
            r"from: must be a user who is a member of the campaign's brand",
            r"(?:google|microsoft)_credential: no such credential of the from user",
            r"id: does not match the campaign in the path",
            r"brand: a campaign cannot move to another brand",
            # Subject, html and text are templates: they must compile and render.
            r"(?:subject|html|text): .*",
            # A URL attachment's host is judged (no private addresses) as the fetch would read it.
            r"attachments\.\d+\.url: (?:is not a valid URL|must name a host|has a port out of range|must not point .*)",
        )
    )
)
_PREVIEW_REFUSALS = re.compile(
    "|".join(
        (
            r"brand: is required with contact \(in the body or the X-Rechat-Brand header\)",
            r"brand: does not match the X-Rechat-Brand header",
            r"(?:subject|html|text): .*",
        )
    )
)
UNEXPRESSIBLE_MESSAGES: dict[str, re.Pattern[str]] = {
    **{op: _CAMPAIGN_REFUSALS for op in ("POST /emails", "POST /emails/individual", "PUT /emails/{id}")},
    "POST /emails/preview": _PREVIEW_REFUSALS,
}

# Found and not yet fixed, by operation and check, with what has to change. Any other failure fails the test;
# one of these that is no longer found is reported (a warning), to be struck off once its cause is fixed.
OPEN: dict[tuple[str, str], str] = {}

# Schemathesis' defaults, with 413 added: the body limit is documented on every operation that takes a body,
# and invalid input can exceed it. A 5xx is left to the not_a_server_error check, so it is reported once.
REJECTION_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
ACCEPTANCE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def aside(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs a coroutine on a loop of its own in another thread: neither the tests' loop nor the app's."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


@dataclass
class Seeded:
    """What exists before schemathesis starts: real ids it could not guess."""

    brand: str
    token: str
    # By path parameter name for every operation, then by (METHOD, path) where a name means something else.
    ids: dict[str, str] = field(default_factory=dict)
    by_operation: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # One request known to succeed, by operation, where generated input rarely does: their answers are checked.
    valid: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path_parameters(self, operation: Operation) -> dict[str, str]:
        names = {parameter.name for parameter in operation.path_parameters}
        specific = self.by_operation.get((operation.method.upper(), operation.path), {})
        return {**{k: v for k, v in self.ids.items() if k in names}, **specific}


# OAuth clients for both providers, so that consent URLs are answered rather than refused for want of one. A
# state is never valid here, so nothing is sent to the providers, whose token URLs lead nowhere all the same.
OAUTH_CLIENTS = {
    setting: value
    for kind in ("google", "microsoft")
    for setting, value in (
        (f"{kind}_client_id", f"contract-{kind}"),
        (f"{kind}_client_secret", f"contract-{kind}-secret"),
        (f"{kind}_token_url", "http://127.0.0.1:9/token"),
    )
}


@pytest.fixture
def contract_app(settings: Settings) -> Iterator[FastAPI]:
    app = create_app(settings.model_copy(update=OAUTH_CLIENTS))
    yield app
    # Ends the app's lifespan, which closes its database pools on the loop they were opened on.
    asgi.shutdown_lifespans()


def seed(app: FastAPI, settings: Settings) -> Seeded:
    async def bootstrap() -> tuple[str, str]:
        engine = make_engine(resolve_database_url(settings))
        try:
            async with make_sessionmaker(engine)() as s, s.begin():
                brand, _, token = await service.bootstrap(
                    s, brand_name="Contract", email="contract-admin@example.com", first_name="Ann", last_name="Admin"
                )
        finally:
            await engine.dispose()
        return str(brand.id), token

    brand, token = aside(bootstrap)
    headers = {"Authorization": f"Bearer {token}", "X-Rechat-Brand": brand}
    with asgi.get_client(cast(Any, app)) as client:

        def data(method: str, path: str, body: Any = None) -> Any:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code < 300, (path, response.text)
            return response.json()["data"]

        contact = data("POST", f"/brands/{brand}/contacts", {"contacts": [{"emails": ["jane@example.com"]}]})[0]
        crm_list = data("POST", f"/brands/{brand}/lists", {"name": "Buyers", "members": [contact["id"]]})
        campaign_body = {
            "to": [{"recipient_type": "Email", "email": "jane@example.com"}],
            "subject": "Open house",
            "html": "<p>Sunday 2pm</p>",
            "due_at": "2031-05-01T15:00:00Z",
        }
        campaign = data("POST", "/emails", campaign_body)
        # A token of its own, so that deleting it leaves the run's token working.
        spare_token = data("POST", "/users/self/tokens", {"name": "spare"})
        credentials = {
            kind: data("POST", f"/users/self/{kind}-credentials", mailbox(f"{kind}-box@example.com"))["id"]
            for kind in ("google", "microsoft")
        }
    seeded = Seeded(
        brand=brand,
        token=token,
        ids={"brand": brand, "list": crm_list["id"], "campaign": campaign["id"], "address": "jane@example.com"},
        valid={
            "POST /brands/{brand}/users": {"body": {"email": "agent-two@example.com", "role": "Agent"}},
            "POST /brands/{brand}/invitations": {"body": {"email": "invitee@example.com", "role": "Agent"}},
            "POST /brands/{brand}/lists/{list}/members": {"body": {"members": [contact["id"]]}},
            "POST /agents": {"body": {"email": "agent@mls.example.com"}},
            "POST /emails": {"body": campaign_body},
            "POST /emails/individual": {"body": campaign_body},
            **{
                f"POST /users/self/{kind}-credentials": {"body": mailbox(f"{kind}-other@example.com")}
                for kind in ("google", "microsoft")
            },
        },
    )
    for method, path in (("GET", "{id}"), ("PUT", "{id}"), ("DELETE", "{id}"), ("PUT", "{id}/notifications")):
        seeded.by_operation[(method, f"/emails/{path}")] = {"id": campaign["id"]}
    seeded.by_operation[("GET", "/emails/{id}/stats")] = {"id": campaign["id"]}
    # Tests of the seeded campaign are queued (no worker runs here) until the caller's allowance is spent: 429.
    seeded.by_operation[("POST", "/emails/{id}/test")] = {"id": campaign["id"]}
    seeded.by_operation[("DELETE", "/users/self/tokens/{id}")] = {"id": spare_token["id"]}
    for kind, credential in credentials.items():
        for method, path in (("POST", "{credential}/revoke"), ("DELETE", "{credential}")):
            seeded.by_operation[(method, f"/users/self/{kind}-credentials/{path}")] = {"credential": credential}
        for method, path in (
            ("PUT", "messages/{message_id}"),
            ("PUT", "messages"),
            ("POST", "trash"),
            ("POST", "archive"),
        ):
            seeded.by_operation[(method, f"/emails/{kind}/{{credential_id}}/{path}")] = {"credential_id": credential}
    return seeded


def mailbox(address: str) -> dict[str, Any]:
    return {
        "email": address,
        "scope_summary": ["profile", "mail.read", "mail.send", "mail.modify"],
        "access_token": f"access-{uuid.uuid4().hex}",
        "refresh_token": f"refresh-{uuid.uuid4().hex}",
        "expires_at": 4102444800,
    }


def unexpressible(case: Case, response: Any) -> bool:
    """Whether a refusal is one that UNEXPRESSIBLE_MESSAGES lists for the operation."""
    pattern = UNEXPRESSIBLE_MESSAGES.get(case.operation.label)
    if pattern is None or response.status_code != 400:
        return False
    message = response.json().get("message")
    return isinstance(message, str) and pattern.fullmatch(message) is not None


def ends_something(operation: Operation) -> bool:
    """Deleting and revoking come last, so the operations before them still find what was seeded."""
    return operation.method.upper() == "DELETE" or operation.path.endswith("/revoke")


_FIELD = re.compile(r'"message":"([^":]*):')
# contacts.3.emails.0 and contacts.0.emails.1 are one finding: contacts.N.emails.N.
_INDEX = re.compile(r"(?<=[.\[])\d+")


@dataclass
class Findings:
    """The first failing request for each (operation, check, field the answer names)."""

    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def record(self, case: Case) -> int | None:
        """Sends the case and checks the answer; its status, or None when the app raised instead."""
        try:
            response = case.call()
        except Exception as exc:  # the app raised instead of answering
            self._add(case, "crash", type(exc).__name__, f"{exc}")
            return None
        try:
            case.validate_response(response)
        except FailureGroup as group:
            for failure in group.exceptions:
                named = _FIELD.search(response.text)
                check = "/".join(failure.checks) or type(failure).__name__
                if check == "positive_data_acceptance" and unexpressible(case, response):
                    continue
                where = _INDEX.sub("N", named.group(1)) if named else "no field"
                self._add(case, check, f"{failure.title}; {where}", f"[{response.status_code}] {response.text[:300]}")
        return response.status_code

    def _add(self, case: Case, check: str, what: str, answer: str) -> None:
        key = (case.operation.label, check, what)
        if key not in self.failures:
            self.failures[key] = f"{answer}\n    {case.as_curl_command()[:500]}"

    def new(self) -> str:
        """The failures not listed in OPEN, each with the first request that showed it."""
        return "\n".join(
            f"{label} -- {check} ({what})\n    {example}"
            for (label, check, what), example in self.failures.items()
            if (label, check) not in OPEN
        )

    def closed(self) -> list[tuple[str, str]]:
        found = {(label, check) for label, check, _ in self.failures}
        return [key for key in OPEN if key not in found]


def exercise(operation: Operation, seeded: Seeded, findings: Findings) -> None:
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    schema = operation.schema
    auth = schemathesis.AuthContext(operation=operation, app=operation.app)
    generation = schema.config.generation_for(operation=operation, phase="coverage")
    for case in schema.iter_coverage_cases(
        operation, generation_modes=[positive, negative], generation_config=generation
    ):
        set_on_generated_case(case, auth, None)
        findings.record(case)

    brand_header = operation.get_parameter("X-Rechat-Brand", "header") is not None
    headers = {"X-Rechat-Brand": seeded.brand} if brand_header else {}
    if operation.label in seeded.valid:
        known = operation.Case(
            path_parameters=seeded.path_parameters(operation),
            headers=dict(headers),
            media_type="application/json",
            **seeded.valid[operation.label],
        )
        set_on_generated_case(known, auth, None)
        if (findings.record(known) or 500) >= 300:
            findings.failures[(operation.label, "valid request", "refused")] = f"{seeded.valid[operation.label]}"
    strategies = [
        operation.as_strategy(positive, path_parameters=seeded.path_parameters(operation), headers=headers),
        operation.as_strategy(positive),
        operation.as_strategy(negative),
        *operation.get_strategies_from_examples(),
    ]

    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        # The same inputs on every run: a failure here is reproducible, not a lucky draw.
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def search(case: Case) -> None:
        findings.record(case)

    search()


def contract_config(token: str) -> schemathesis.Config:
    acceptance = {"expected-statuses": [*ACCEPTANCE_STATUSES, "400"]}
    return schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"bearerAuth": {"bearer": token}}},
            "checks": {"negative_data_rejection": {"expected-statuses": REJECTION_STATUSES}},
            "operations": [
                {"include-name": sorted(UNEXPRESSIBLE_REFUSALS), "checks": {"positive_data_acceptance": acceptance}}
            ],
        }
    )


# A few thousand generated requests against every operation: over a minute.
@pytest.mark.slow
def test_schemathesis_finds_no_failure(contract_app: FastAPI, settings: Settings) -> None:
    seeded = seed(contract_app, settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", contract_app, config=contract_config(seeded.token))
    operations = sorted(
        (result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)), key=ends_something
    )
    assert len(operations) == len(list(schema.get_all_operations())), "the API document is invalid"
    findings = Findings()
    for operation in operations:
        exercise(operation, seeded, findings)
    for label, check in findings.closed():
        warnings.warn(f"{label}: {check} found nothing this run; once its cause is fixed, strike it off", stacklevel=1)
    assert not findings.new(), findings.new()
