"""kill -9 of the worker in the middle of a 20,000-recipient campaign, then a restart.

What a user needs: everyone gets the message; the only repeats are messages that were in flight
when the worker died (SMTP cannot tell a message the server kept from one it lost); the campaign
ends complete, every recipient row sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailroom.transports.smtp import SmtpTransport
from tests.support import faults
from tests.support.smtp_server import smtp_server
from tests.support.workers import WorkerGroup
from tests.support.world import World

RECIPIENTS = 20_000
BATCH = 500
CONCURRENCY = 2
# A job records its outcomes after every call to the transport: at most that many per running job can be unrecorded.
IN_FLIGHT = SmtpTransport.capabilities.max_recipients_per_call * CONCURRENCY


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[WorkerGroup]:
    with faults.fleet(database_url, tmp_path) as group:
        yield group


@pytest.mark.slow
@pytest.mark.timeout(420)  # the two waits below, with room: on a loaded machine the first may take minutes
async def test_kill_9_mid_campaign_then_restart(world: World, workers: WorkerGroup, database_url: str) -> None:
    admin = await world.brand_admin()
    expected = await faults.seed_contacts(database_url, admin.brand, RECIPIENTS)
    with smtp_server() as smtp:
        settings: dict[str, Any] = {
            "transport": "smtp",
            "smtp_url": smtp.url,
            "batch_size": BATCH,
            "concurrency": CONCURRENCY,
        }
        (first,) = await faults.start_ready(workers, database_url, **settings)
        campaign = await faults.schedule_to_all_contacts(admin)
        try:
            await faults.until(
                lambda: len(smtp.messages) >= RECIPIENTS // 4, within=150, what="a quarter of the mail", group=workers
            )
        except AssertionError as exc:
            state = await faults.read_state(database_url, campaign)
            raise AssertionError(f"{exc}\n{len(smtp.messages)} received; campaign: {state}") from None
        first.kill()
        at_kill = len(smtp.messages)
        recorded = (await faults.read_state(database_url, campaign)).sent_rows
        assert at_kill < RECIPIENTS, "the campaign was over before the kill: nothing was tested"

        await faults.start_ready(workers, database_url, **settings)
        final = await faults.wait_finished(database_url, campaign, workers, within=150)
        received = Counter(address.lower() for m in smtp.messages for address in m.rcpt_tos)

    assert not set(expected) - set(received), f"{len(set(expected) - set(received))} recipients got nothing"
    assert set(received) == set(expected)
    duplicates = sum(n - 1 for n in received.values())
    print(
        f"\nkill -9 after {at_kill} messages received ({recorded} recorded sent); "
        f"received twice after the restart: {duplicates} (bound {IN_FLIGHT})"
    )
    assert duplicates <= IN_FLIGHT
    assert final.failed_at is None, final.failure
    assert (final.recipients_count, final.sent_rows, final.error_rows) == (RECIPIENTS, RECIPIENTS, 0)
    assert final.sent == RECIPIENTS
    rows = await faults.recipient_rows(database_url, campaign)
    assert all(sent_at is not None for _, _, _, sent_at, _ in rows)
    assert len({email for _, email, _, _, _ in rows}) == RECIPIENTS  # one emails row per recipient
