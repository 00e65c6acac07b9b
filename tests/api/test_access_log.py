"""The access log: each request the API answers is a line (once gathered), unless MAILROOM_ACCESS_LOG=false."""

from __future__ import annotations

import logging

import pytest

from mailroom.config import Settings
from tests.support.apps import app_client


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "mailroom.access"]


async def test_each_answered_request_is_a_line(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mailroom.access"):
        async with app_client(settings, peer="10.1.2.3") as client:
            assert (await client.get("/health")).status_code == 200
            assert (
                await client.get(
                    "/emails/00000000-0000-0000-0000-000000000000", headers={"Authorization": "Bearer nope"}
                )
            ).status_code == 401
            # A tracking hit answered before routing: counted, not logged; a refused one is logged.
            assert (await client.get("/t/o/SECRET1")).status_code == 200
            assert (await client.get("/t/c/SECRET2")).status_code == 404
        # Written when the app stopped, not before.
    health, refused, click = access_lines(caplog)
    assert health.startswith('10.1.2.3:40000 - "GET /health HTTP/1.1" 200 ') and health.endswith(" ms")
    assert refused.startswith('10.1.2.3:40000 - "GET /emails/00000000-0000-0000-0000-000000000000 HTTP/1.1" 401 ')
    assert click.startswith('10.1.2.3:40000 - "GET /t/<redacted> HTTP/1.1" 404 ')
    assert "SECRET" not in caplog.text


async def test_no_lines_when_the_log_is_off(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mailroom.access"):
        async with app_client(settings, access_log=False) as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/t/c/SECRET2")).status_code == 404
    assert access_lines(caplog) == []
