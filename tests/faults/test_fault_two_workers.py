"""Two worker processes (as on two machines) share one large campaign's slices: both do work, and
no address receives the message twice. Each worker relays to its own SMTP server, so what each
server received is exactly what that worker sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import faults
from tests.support.smtp_server import smtp_server
from tests.support.workers import WorkerGroup
from tests.support.world import World

# Two worker processes sending 5,000 messages: over 10 s.
pytestmark = pytest.mark.slow

RECIPIENTS = 5_000
BATCH = 100


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[WorkerGroup]:
    with faults.fleet(database_url, tmp_path) as group:
        yield group


async def test_two_workers_share_a_campaign(world: World, workers: WorkerGroup, database_url: str) -> None:
    admin = await world.brand_admin()
    expected = await faults.seed_contacts(database_url, admin.brand, RECIPIENTS)
    with smtp_server() as smtp_a, smtp_server() as smtp_b:
        for smtp in (smtp_a, smtp_b):
            await faults.start_ready(
                workers, database_url, transport="smtp", smtp_url=smtp.url, batch_size=BATCH, concurrency=2
            )
        campaign = await faults.schedule_to_all_contacts(admin)
        final = await faults.wait_finished(database_url, campaign, workers, within=90)
        by_a = Counter(a.lower() for m in smtp_a.messages for a in m.rcpt_tos)
        by_b = Counter(a.lower() for m in smtp_b.messages for a in m.rcpt_tos)

    print(f"\nworker A sent {by_a.total()}, worker B sent {by_b.total()}")
    assert by_a and by_b, "both workers did part of the campaign"
    assert by_a + by_b == Counter(expected), "everyone exactly once, across both workers"
    assert final.failed_at is None, final.failure
    assert (final.sent_rows, final.error_rows, final.sent) == (RECIPIENTS, 0, RECIPIENTS)
    rows = await faults.recipient_rows(database_url, campaign)
    assert len({email for _, email, *_ in rows}) == RECIPIENTS
