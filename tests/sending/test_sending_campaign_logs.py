"""The log lines an operator reads for each campaign: executed, finished, failed; with ids and counts."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI

from mailroom.config import Settings
from mailroom.sending.execute import fail_campaign
from mailroom.sending.jobs import execute_due_campaigns
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World


async def _campaign(world: World, n: int) -> str:
    admin = await world.brand_admin()
    await world.contacts(admin, [{"emails": [f"r{i}@example.com"], "tags": ["t"]} for i in range(n)])
    body = {"subject": "S", "html": "<p>x</p>", "to": [{"recipient_type": "Tag", "tag": "t"}],
            "due_at": datetime.now(UTC).isoformat()}  # fmt: skip
    return str(admin.data(await admin.post("/emails/individual", body))["id"])


def _lines(caplog: pytest.LogCaptureFixture, campaign: str, word: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(f"campaign {campaign} {word}")]


async def test_executed_and_finished_lines(
    world: World, app: FastAPI, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    campaign = await _campaign(world, 3)
    caplog.set_level(logging.INFO, logger="mailroom")
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url, batch_size=2):
            await wait_until_sent(app.state.sessionmaker, campaign)
    (executed,) = _lines(caplog, campaign, "executed")
    assert (executed.campaign, executed.recipients, executed.jobs) == (campaign, 3, 2)  # type: ignore[attr-defined]
    finished = _lines(caplog, campaign, "finished")
    assert finished, caplog.text
    assert (finished[0].sent, finished[0].failed, finished[0].recipients) == (3, 0, 3)  # type: ignore[attr-defined]
    assert finished[0].duration >= 0  # type: ignore[attr-defined]


async def test_failed_line_keeps_link_secrets_out(world: World, app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    campaign = await _campaign(world, 2)
    await execute_due_campaigns(app.state.sessionmaker, slice_size=500)
    caplog.set_level(logging.INFO, logger="mailroom")
    reason = "attachment link answered 403: https://u:pw@files.example/a.pdf?X-Amz-Signature=SECRET#frag"
    for _ in range(2):  # a second failure of the same campaign is not a second line
        async with app.state.sessionmaker() as session, session.begin():
            await fail_campaign(session, uuid.UUID(campaign), reason, "send_batch:1")
    (line,) = _lines(caplog, campaign, "failed")
    assert "SECRET" not in caplog.text and "pw@" not in caplog.text
    assert "https://<redacted>@files.example/a.pdf?<redacted>" in line.getMessage()
    assert (line.recipients, line.sent, line.failed) == (2, 0, 0)  # type: ignore[attr-defined]
