"""`mailroom worker` as real subprocesses, the way production runs it, so a test can kill -9 one.

    with worker_group(env, log_dir) as group:
        worker = group.start(concurrency=2)
        ...
        worker.kill()          # SIGKILL, no chance to clean up
        group.start()          # the replacement

Every process started through a group is killed when the block ends, whatever happened.
Also here: the set-based contact seeding and the campaign-state queries that the fault tests
and bench/send.py share.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.support.keys import TEST_SECRET_KEY

# The console script installed next to this interpreter (the project's virtualenv).
MAILROOM = Path(sys.executable).with_name("mailroom")

# One statement for any number of contacts: the fault tests need 20,000 and the bench 500,000,
# which the bulk endpoint (10,000 per call, JSON in and out) would make slow to arrange.
SEED_CONTACTS = """
    INSERT INTO contacts (brand, emails, first_name, last_name)
    SELECT %(brand)s, ARRAY['r' || g || '@' || %(domain)s], 'First' || g, 'Last' || g
    FROM generate_series(CAST(%(first)s AS int), CAST(%(last)s AS int)) AS g
"""


def seeded_address(i: int, domain: str) -> str:
    """The address SEED_CONTACTS gives contact number ``i``."""
    return f"r{i}@{domain}"


# What a user would check on a campaign: is it executed, how many rows, how many sent or failed.
CAMPAIGN_STATE = """
    SELECT c.executed_at, c.recipients_count, c.sent, c.failed, c.failed_at, c.failure,
           count(e.id) AS rows,
           count(e.id) FILTER (WHERE e.email IS NOT NULL) AS sent_rows,
           count(e.id) FILTER (WHERE e.error IS NOT NULL) AS error_rows,
           count(e.id) FILTER (WHERE e.email IS NULL AND e.error IS NULL) AS pending_rows
    FROM email_campaigns c LEFT JOIN email_campaign_emails e ON e.campaign = c.id
    WHERE c.id = %(campaign)s
    GROUP BY c.id
"""


@dataclass(frozen=True)
class CampaignState:
    executed_at: datetime | None
    recipients_count: int | None
    sent: int
    failed: int
    failed_at: datetime | None
    failure: str | None
    rows: int
    sent_rows: int
    error_rows: int
    pending_rows: int

    @property
    def finished(self) -> bool:
        """Executed, every recipient row ended sent or failed, and the totals caught up (or the campaign failed)."""
        if self.failed_at is not None:
            return True
        done = self.recipients_count is not None and self.rows == self.recipients_count and self.pending_rows == 0
        return done and self.sent == self.sent_rows


def clean_env() -> dict[str, str]:
    """The current environment without MAILROOM_* settings, so a developer's shell cannot leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}


def worker_env(database_url: str, data_dir: Path, **settings: object) -> dict[str, str]:
    """Environment for `mailroom` subprocesses: ``smtp_url="..."`` becomes MAILROOM_SMTP_URL."""
    env = clean_env()
    env.update(
        MAILROOM_DATABASE_URL=database_url,
        MAILROOM_DATA_DIR=str(data_dir),
        MAILROOM_SECRET_KEY=TEST_SECRET_KEY,
        MAILROOM_PUBLIC_URL="http://mailroom.test",
    )
    for name, value in settings.items():
        if value is not None:
            env[f"MAILROOM_{name.upper()}"] = str(value)
    return env


def run_migrate(env: Mapping[str, str], *, timeout: float = 180) -> None:
    """`mailroom migrate`: the tables and the job queue's schema (idempotent)."""
    done = subprocess.run(
        [str(MAILROOM), "migrate"], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"mailroom migrate failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def peak_rss_kib(pid: int) -> int:
    """VmHWM (the kernel's high-water mark of resident memory) of one live process, in KiB; 0 if gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time one live process has used, in seconds; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are the 14th and 15th fields of stat(5), the 12th and 13th after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    # /proc/<pid>/task/<tid>/children lists direct children; walk it so a worker that forks helpers
    # is measured (and killed) as a whole.
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(children)
            stack.extend(children)
    return found


class WorkerProcess:
    """One `mailroom worker` subprocess; its output goes to ``log_path``."""

    def __init__(self, env: Mapping[str, str], log_path: Path, args: list[str]) -> None:
        self.log_path = log_path
        self.args = args
        with log_path.open("ab") as log:
            # Its own session: a signal for the worker reaches any helper it forked, and nothing else.
            self.process = subprocess.Popen(
                [str(MAILROOM), "worker", *args],
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def peak_rss_kib(self) -> int:
        """Peak resident memory of the worker (and of any process it forked, summed)."""
        if not self.alive:
            return 0
        return peak_rss_kib(self.pid) + sum(peak_rss_kib(child) for child in _descendants(self.pid))

    def cpu_seconds(self) -> float:
        """CPU time the worker (and any process it forked) has used so far, in seconds."""
        if not self.alive:
            return 0.0
        return cpu_seconds(self.pid) + sum(cpu_seconds(child) for child in _descendants(self.pid))

    def kill(self) -> None:
        """kill -9: the worker (and its process group) stop at once, mid-whatever."""
        if self.alive:
            with suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, the way a service manager stops it; SIGKILL if it does not exit in time."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class WorkerGroup:
    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.processes: list[WorkerProcess] = []

    def start(self, *, concurrency: int | None = None, **settings: object) -> WorkerProcess:
        """A new worker; ``settings`` override the group's MAILROOM_* environment for this one."""
        env = dict(self.env)
        for name, value in settings.items():
            env[f"MAILROOM_{name.upper()}"] = str(value)
        args = ["--concurrency", str(concurrency)] if concurrency is not None else []
        log_path = self.log_dir / f"worker-{len(self.processes) + 1}.log"
        worker = WorkerProcess(env, log_path, args)
        self.processes.append(worker)
        return worker

    @property
    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.processes if w.alive]

    def logs(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {w.log_path.name} (pid {w.pid}, exit {w.process.poll()}) ---\n{w.log_tail(lines)}"
            for w in self.processes
        )

    def close(self) -> None:
        for worker in self.processes:
            with suppress(Exception):  # keep going: every other worker must still be killed
                worker.kill()


@contextmanager
def worker_group(env: Mapping[str, str], log_dir: Path) -> Iterator[WorkerGroup]:
    log_dir.mkdir(parents=True, exist_ok=True)
    group = WorkerGroup(env, log_dir)
    try:
        yield group
    finally:
        group.close()
