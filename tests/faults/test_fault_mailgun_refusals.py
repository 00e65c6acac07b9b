"""The Mailgun API answers 503, then 429 with Retry-After, for a while, then recovers: the campaign
completes, nothing is lost or sent twice, nothing is marked failed, and what reached the API is a
well-formed Mailgun request, checked field by field."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from email.utils import parseaddr
from pathlib import Path

import psycopg
import pytest

from mailroom.db import libpq_url
from tests.support import faults
from tests.support.mailgun_server import MailgunRequest, mailgun_server
from tests.support.workers import WorkerGroup
from tests.support.world import World

# Worker processes through a refusing Mailgun and its retries: over 10 s.
pytestmark = pytest.mark.slow

RECIPIENTS = 1_500
API_KEY = "key-faults"
DOMAIN = "mg.faults.example"
TAG = "spring-open-house"


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[WorkerGroup]:
    with faults.fleet(database_url, tmp_path) as group:
        yield group


def _fill(template: str, variables: dict[str, object]) -> str:
    # Mailgun batch sending substitutes %recipient.NAME% from the recipient's variables.
    return re.sub(r"%recipient\.([\w.-]+)%", lambda m: str(variables[m.group(1)]), template)


def _deliveries(request: MailgunRequest) -> list[tuple[str, str, str, str, str]]:
    """(address, From, Subject, html, text) of each message a successful request asked Mailgun to send."""
    if request.endpoint == "messages.mime":
        mime = request.mime
        assert mime is not None
        html = mime.get_body(("html",))
        text = mime.get_body(("plain",))
        assert html is not None and text is not None, "multipart/alternative with text and html"
        assert [a.lower() for a in request.fields["to"]] == [parseaddr(str(mime["To"]))[1].lower()]
        content = (html.get_content(), text.get_content())
        return [(request.fields["to"][0], str(mime["From"]), str(mime["Subject"]), *content)]
    assert request.endpoint == "messages"
    variables = json.loads(request.field("recipient-variables"))
    addresses = [parseaddr(to)[1] for to in request.fields["to"]]
    assert set(variables) == set(addresses), "recipient-variables are keyed by the `to` addresses"
    sender = request.field("from")
    subject, body, plain = request.field("subject"), request.field("html"), request.field("text")
    return [
        (a, sender, _fill(subject, variables[a]), _fill(body, variables[a]), _fill(plain, variables[a]))
        for a in addresses
    ]


async def test_mailgun_503_then_429_then_recovering(world: World, workers: WorkerGroup, database_url: str) -> None:
    admin = await world.brand_admin()
    expected = await faults.seed_contacts(database_url, admin.brand, RECIPIENTS)
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute("SELECT email FROM users WHERE id = %s", (admin.user,)).fetchone()
        assert row is not None
        sender = str(row[0])
    with mailgun_server(api_key=API_KEY, domains={DOMAIN}) as mailgun:
        mailgun.fail_next(3, 503)
        mailgun.fail_next(3, 429, {"message": "Too many requests"}, {"Retry-After": "1"})
        await faults.start_ready(
            workers,
            database_url,
            transport="mailgun",
            mailgun_api_url=mailgun.url,
            mailgun_api_key=API_KEY,
            mailgun_domain=DOMAIN,
            batch_size=500,
        )
        campaign = await faults.schedule_to_all_contacts(admin, tags=[TAG])
        final = await faults.wait_finished(database_url, campaign, workers, within=90)
        requests = list(mailgun.requests)

    refused = Counter(r.status for r in requests if r.status != 200)
    assert refused == {503: 3, 429: 3}, "the outage happened as arranged"
    accepted = [r for r in requests if r.status == 200]
    print(f"\nMailgun: {len(requests)} API calls, {len(accepted)} accepted, refused {dict(refused)}")

    first_names = {address: f"First{i}" for i, address in enumerate(expected, start=1)}
    delivered: Counter[str] = Counter()
    for request in accepted:
        assert request.domain == DOMAIN
        # Mailgun takes its form either way; without attachments httpx sends it urlencoded.
        assert request.content_type.startswith("multipart/form-data")
        assert 0 < len(request.fields["to"]) <= 1000
        assert request.fields["o:tag"] == [str(admin.brand), campaign, TAG]
        for address, from_, subject, html, text in _deliveries(request):
            delivered[address.lower()] += 1
            first = first_names[address.lower()]
            assert sender.lower() in from_.lower()
            assert subject == f"Hello {first}"
            assert f"Dear {first} Last{first.removeprefix('First')}," in html
            assert f"Dear {first} Last{first.removeprefix('First')}," in text
    assert delivered == Counter(expected), "everyone exactly once"

    assert final.failed_at is None, final.failure
    assert (final.sent_rows, final.error_rows, final.sent, final.failed) == (RECIPIENTS, 0, RECIPIENTS, 0)
    rows = await faults.recipient_rows(database_url, campaign)
    assert all(mailgun_id and mailgun_id.endswith(f"@{DOMAIN}") for *_, mailgun_id in rows)
