"""MAILROOM_LOG_FORMAT=json: one JSON object a line, extra fields kept, public-link tokens kept out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from mailroom.links import install_access_log_filter
from mailroom.logs import JsonFormatter


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    # As configure_logging leaves uvicorn's loggers, whatever an in-process uvicorn elsewhere in the run set.
    uvicorn = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.access")]
    saved = [(logger.level, logger.propagate, logger.disabled, list(logger.handlers)) for logger in uvicorn]
    root_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for logger in uvicorn:
        logger.setLevel(logging.INFO)
        logger.propagate, logger.disabled, logger.handlers = True, False, []
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)
        for logger, (level, propagate, disabled, handlers) in zip(uvicorn, saved, strict=True):
            logger.setLevel(level)
            logger.propagate, logger.disabled, logger.handlers = propagate, disabled, handlers


def test_access_log_lines_are_json_without_the_token(json_lines: io.StringIO) -> None:
    install_access_log_filter()
    # The call uvicorn makes for every request.
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/unsubscribe/s3cr3tT0ken?x=1", "1.1", 200
    )
    (line,) = [json.loads(text) for text in json_lines.getvalue().splitlines()]
    assert line["logger"] == "uvicorn.access" and line["level"] == "INFO"
    assert line["message"] == '127.0.0.1:5000 - "POST /unsubscribe/<redacted> HTTP/1.1" 200'
    assert "s3cr3tT0ken" not in json_lines.getvalue()


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
