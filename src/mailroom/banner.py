"""What `mailroom serve` says once it answers: where it is, where its files are, and the next step.

One log record (so JSON logs stay one object a line), written after the service has answered its own
/health: a newcomer reads where to go rather than a scroll of startup lines.
"""

from __future__ import annotations

import http.client
import logging
import os
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path

from mailroom.config import Settings
from mailroom.transports.registry import transport_name, undeliverable_sender

log = logging.getLogger("mailroom.serve")
# How often serve asks its own /health until it answers (the API processes may still be importing).
POLL_SECONDS = 0.2


def mailroom_command() -> str:
    """How to run this `mailroom` from here, so a printed command works when pasted: `.venv/bin/mailroom`
    under make, `mailroom` when that is the one on PATH, else `python -m mailroom`."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "mailroom":
        on_path = shutil.which("mailroom")
        if on_path and Path(on_path).resolve() == Path(argv0).resolve():
            return "mailroom"
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m mailroom"


def bootstrap_command(settings: Settings, *, embedded: bool) -> str:
    """The first step's command, as the README gives it. A data folder chosen in this shell's environment is
    spelled out: the command runs in another terminal, which may not have it, against the same embedded
    database. A configured database URL is not (it may hold a password); that terminal needs it too."""
    prefix = ""
    if embedded and os.environ.get("MAILROOM_DATA_DIR"):
        prefix = f"MAILROOM_DATA_DIR={shlex.quote(str(settings.data_dir.resolve()))} "
    example = '--brand "Acme Realty" --email you@example.com --first Ann --last Lee'
    return f"{prefix}{mailroom_command()} bootstrap {example}"


def local_address(host: str, port: int) -> str:
    """The http:// address of the service as given to --host (IPv6 in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def banner(settings: Settings, address: str, *, first_step: str | None) -> tuple[str, dict[str, str]]:
    """The banner's text and, for JSON logs, the same facts as fields."""
    fields = {"address": address, "docs": f"{address}/docs", "data_dir": str(settings.data_dir.resolve())}
    lines = [f"mailroom is up at {address} (API docs: {address}/docs)", f"  data:    {fields['data_dir']}"]
    if transport_name(settings) == "outbox":
        fields["outbox"] = str((settings.data_dir / "outbox").resolve())
        lines.append(f"  outbox:  {fields['outbox']} (mail is written there as .eml files, not sent)")
    if warning := undeliverable_sender(settings):
        fields["warning"] = warning
        lines.append(f"  note:    {warning}")
    if first_step:
        fields["bootstrap"] = first_step
        lines += ["  no user yet: in another terminal, create a brand, its Admin and a token with", f"    {first_step}"]
    return "\n".join(lines), fields


def announce_when_up(host: str, port: int, text: str, fields: dict[str, str]) -> None:
    """Log the banner from a background thread once the service answers /health. Asked over the network,
    so it is true whether one process serves or several (whose startup this process does not see)."""
    ask = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

    def answers() -> bool:
        # http.client: no proxy from the environment, no request log of its own.
        connection = http.client.HTTPConnection(ask, port, timeout=2)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def watch() -> None:
        while not answers():
            time.sleep(POLL_SECONDS)
        log.info(text, extra=fields)

    threading.Thread(target=watch, name="banner", daemon=True).start()
