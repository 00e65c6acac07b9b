"""Log output: plain lines, or one JSON object a line (MAILROOM_LOG_FORMAT=json) for log collectors.

Every process logs through the root logger; uvicorn's loggers are left without handlers of their
own so they reach it too, in the same format. uvicorn's access log is off: the access log is
mailroom's own (api/access_log.py), which hands its lines here in batches (write_lines).
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any, NamedTuple

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is written out.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# uvicorn attaches an ANSI-coloured copy of some messages; it adds nothing to a JSON line.
_SKIPPED = {"color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _SKIPPED and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class _Output(NamedTuple):
    handler: logging.StreamHandler[IO[str]]
    json: bool


# The handler configure_logging installed, and whether it writes JSON: write_lines formats as it does.
_output: _Output | None = None


def configure_logging(fmt: str = "text", level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """One handler on the root logger (writing to stderr unless ``stream`` is given); uvicorn's loggers hand
    their records to it, except its access log, which is off."""
    global _output
    handler: logging.StreamHandler[IO[str]] = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        # Without a handler to reach, uvicorn does not even format its access lines.
        logger.propagate = name != "uvicorn.access"
    _output = _Output(handler, fmt == "json")


class Line(NamedTuple):
    """An INFO line to write later: when it happened, its message, and its fields (apart in JSON)."""

    created: float
    message: str
    fields: dict[str, Any]


class _Stamps:
    """The timestamp texts of one second, made once a second rather than once a line."""

    def __init__(self) -> None:
        self.second = -1
        self.local = self.utc = ""

    def at(self, created: float) -> tuple[str, str, int]:
        second = int(created)
        if second != self.second:
            self.second = second
            # As logging.Formatter writes asctime (local time), and as JsonFormatter writes timestamp.
            self.local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self.utc = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return self.local, self.utc, int((created - second) * 1000)


_stamps = _Stamps()


def write_lines(logger: str, lines: list[Line]) -> None:
    """INFO lines of ``logger``, formatted as configure_logging's handler formats every record, in one write.
    Where logging was set up some other way (a test's capture), each goes through the logging module."""
    output, log = _output, logging.getLogger(logger)
    if not lines or not log.isEnabledFor(logging.INFO):
        return
    if output is None or output.handler not in logging.getLogger().handlers:
        for line in lines:
            log.info("%s", line.message, extra=line.fields)
        return
    parts = []
    for line in lines:
        local, utc, ms = _stamps.at(line.created)
        if output.json:
            head = {"timestamp": f"{utc}.{ms:03d}+00:00", "level": "INFO", "logger": logger, "message": line.message}
            parts.append(orjson.dumps(head | line.fields, default=str).decode())
        else:
            parts.append(f"{local},{ms:03d} INFO {logger}: {line.message}")
    output.handler.acquire()
    try:
        output.handler.stream.write("\n".join(parts) + "\n")
        output.handler.flush()
    finally:
        output.handler.release()
