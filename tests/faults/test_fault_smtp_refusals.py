"""The SMTP server refuses every transaction (421 closing the connection, or 451) until each send job
has been refused, then recovers: the campaign completes, everyone gets the message exactly once,
nothing failed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from tests.support import faults
from tests.support.smtp_server import smtp_server
from tests.support.workers import WorkerGroup
from tests.support.world import World

# Worker processes, refused and then waiting out the first retry: about 7 s each.
pytestmark = pytest.mark.slow

RECIPIENTS = 1_000
BATCH = 100
# More refusals than the workers could ever ask for: the window is closed by what the workers did,
# not by running out of refusals.
QUEUED_REFUSALS = 1_000_000


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[WorkerGroup]:
    with faults.fleet(database_url, tmp_path) as group:
        yield group


@pytest.mark.parametrize(
    ("reply", "stage"),
    [
        ("421 4.3.2 Service shutting down, try again later", "mail"),
        ("451 4.3.0 Temporary local problem, try again later", "data"),
    ],
    ids=["421-at-MAIL", "451-at-DATA"],
)
async def test_smtp_refusing_for_a_while_then_recovering(
    world: World, workers: WorkerGroup, database_url: str, reply: str, stage: Literal["mail", "data"]
) -> None:
    admin = await world.brand_admin()
    expected = await faults.seed_contacts(database_url, admin.brand, RECIPIENTS)
    with smtp_server() as smtp:
        refusals = smtp.handler.mail_replies if stage == "mail" else smtp.handler.data_replies
        smtp.fail_next(QUEUED_REFUSALS, reply, stage=stage)
        await faults.start_ready(workers, database_url, transport="smtp", smtp_url=smtp.url, batch_size=BATCH)
        campaign = await faults.schedule_to_all_contacts(admin)

        # The server refuses until every send job has been refused and put back for a retry, however
        # long that takes on this machine.
        async def every_job_refused() -> bool:
            return await faults.send_jobs_retried(database_url, campaign) == (RECIPIENTS // BATCH, RECIPIENTS // BATCH)

        await faults.until(every_job_refused, within=60, what="every send job refused once", group=workers)
        refused = QUEUED_REFUSALS - len(refusals)
        refusals.clear()  # the server recovers

        final = await faults.wait_finished(database_url, campaign, workers, within=90)
        received = Counter(address.lower() for m in smtp.messages for address in m.rcpt_tos)

    print(f"\n{reply[:3]}: {refused} transactions refused before every send job had been refused once")
    assert received == Counter(expected), "every recipient exactly once"
    assert final.failed_at is None, final.failure
    assert (final.sent_rows, final.error_rows, final.sent, final.failed) == (RECIPIENTS, 0, RECIPIENTS, 0)
