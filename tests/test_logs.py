"""Log lines: MAILROOM_LOG_FORMAT=json writes one JSON object a line with extra fields kept; the access log
writes as every other line does, without public-link tokens."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest

from mailroom.api.access_log import FLUSH_SECONDS, AccessLog
from mailroom.logs import configure_logging


@contextmanager
def configured(fmt: str) -> Iterator[io.StringIO]:
    """configure_logging writing to a buffer; the root logger and uvicorn's loggers as they were after."""
    out = io.StringIO()
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access"))]
    saved = [(logger.level, logger.propagate, logger.disabled, list(logger.handlers)) for logger in loggers]
    configure_logging(fmt, stream=out)
    try:
        yield out
    finally:
        for logger, (level, propagate, disabled, handlers) in zip(loggers, saved, strict=True):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            for handler in handlers:
                logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    with configured("json") as out:
        yield out


def lines_of(out: io.StringIO, logger: str) -> list[dict[str, Any]]:
    """The JSON lines written by ``logger`` or its children."""
    lines = [json.loads(text) for text in out.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == logger or str(line["logger"]).startswith(logger + ".")]


def ours(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines of this test's requests: the shared app of the run may write its own beside them."""
    return [line for line in lines if line.get("client") == "192.0.2.7:5000"]


def scope(path: str, query: bytes = b"", method: str = "GET") -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "query_string": query, "http_version": "1.1",
            "client": ("192.0.2.7", 5000)}  # fmt: skip


async def test_access_log_lines_are_json_without_the_token(json_lines: io.StringIO) -> None:
    access = AccessLog()
    access.request(scope("/unsubscribe/s3cr3tT0ken", b"x=1", "POST"), 200, 0.0123)
    access.request(scope("/t/o/0penT0ken"), 200, 0.001)  # an answered hit: counted, not logged
    access.request(scope("/t/c/cl1ckT0ken"), 404, 0.001)  # a refused one is
    logging.getLogger("mailroom.sending.slices").info("beside it")
    assert "s3cr3tT0ken" not in json_lines.getvalue()
    # Gathered, then written within a quarter second.
    assert ours(lines_of(json_lines, "mailroom.access")) == []
    await asyncio.sleep(FLUSH_SECONDS + 0.2)
    # Other work of the test run (another test's app) may log beside them.
    (beside,) = lines_of(json_lines, "mailroom.sending.slices")
    first, second = ours(lines_of(json_lines, "mailroom.access"))
    assert first["logger"] == "mailroom.access" and first["level"] == "INFO"
    assert first["message"] == '192.0.2.7:5000 - "POST /unsubscribe/<redacted> HTTP/1.1" 200 12.3 ms'
    assert (first["method"], first["path"], first["status"], first["duration_ms"], first["client"]) == (
        "POST", "/unsubscribe/<redacted>", 200, 12.3, "192.0.2.7:5000"
    )  # fmt: skip
    assert second["path"] == "/t/<redacted>" and second["status"] == 404
    # The timestamp is written as every other line's is.
    shape = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"
    assert re.fullmatch(shape, beside["timestamp"]) and re.fullmatch(shape, first["timestamp"])
    assert abs(datetime.fromisoformat(first["timestamp"]) - datetime.fromisoformat(beside["timestamp"])) < timedelta(
        seconds=1
    )
    assert "0penT0ken" not in json_lines.getvalue() and "cl1ckT0ken" not in json_lines.getvalue()


async def test_text_access_lines_look_like_every_other_line() -> None:
    with configured("text") as out:
        access = AccessLog()
        access.request({**scope("/brands/b/contacts", b"tag=x"), "http_version": "1.0"}, 200, 0.002)
        logging.getLogger("mailroom.serve").info("beside it")
        access.flush()  # as a stop does
        beside, line = out.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(stamp + " INFO mailroom.serve: beside it", beside)
    assert re.fullmatch(
        stamp + ' INFO mailroom.access: 192.0.2.7:5000 - "GET /brands/b/contacts\\?tag=x HTTP/1.0" 200 2.0 ms', line
    )
    assert beside[:19] <= line[:19]


def test_extra_fields_and_exceptions_are_fields_of_the_line(json_lines: io.StringIO) -> None:
    log = logging.getLogger("mailroom.sending.slices")
    log.info("campaign c1 finished", extra={"campaign": "c1", "sent": 3, "failed": 1, "duration": 1.5})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it broke")
    first, second = [json.loads(text) for text in json_lines.getvalue().splitlines()]
    assert first["message"] == "campaign c1 finished" and first["timestamp"].endswith("+00:00")
    assert (first["campaign"], first["sent"], first["failed"], first["duration"]) == ("c1", 3, 1, 1.5)
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]
