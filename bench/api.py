"""API throughput against a bare baseline: mailroom's reads and a write, next to the same work done bare.

    .venv/bin/python bench/api.py [--repeat 3] [--duration 10] [--connections 32] [--workers N] [--contacts 20000]

A fresh database (see bench/send.py) with a brand, its Admin and token, N contacts, 60 campaigns made
through the API and one small campaign sent through smtp-sink (so its emails, stats and the sender's
notifications have rows). `mailroom serve` runs as a subprocess sending to the sink, and bench/bare_api.py,
a short Starlette and psycopg app that checks the same token and reads or writes one row, runs
with as many processes. `wrk` measures requests/s and p99 of each request, idle and while an individual
campaign to every contact sends; `hey` measures GET /emails/:id at a fixed 200 requests/s during a send.
Prints a table per run, the medians, mailroom over bare for each request, and whether the targets are met.
Everything it started is stopped, and its database dropped, however it ends. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
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

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))  # send.py, api_latency.py

from api_latency import HEY, Load, Server, bootstrap, command, create, parse_hey, progress, serve_env, stop
from send import SINK, BenchError, Sink, free_port, fresh_database, seed_contacts

from mailroom.crypto import SecretBox
from mailroom.db import libpq_url
from mailroom.tracking_links import TrackingTokens

Conn = psycopg.Connection[tuple[object, ...]]
WRK = shutil.which("wrk")
BARE = Path(__file__).with_name("bare_api.py")
NEEDS = "bench/api.py needs wrk, hey and Postfix's smtp-sink.\nInstall them with:  apt-get install -y wrk hey postfix"
CAMPAIGNS = 60  # more than the page of 50 the listing is asked for
SMALL = 50  # recipients of the campaign sent before measuring: rows for /emails/:id/emails and its stats
WRITE_SUBJECT = "Bench write"
WRITE_HTML = "<p>Hi {{recipient.first_name}}, three new homes near you this weekend.</p>"
# wrk posts the same small body on every request; its -H options add the token and brand headers.
LUA = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[%s]]\n'
RATE_CONNECTIONS, RATE_PER_CONNECTION = 8, 25  # hey's -q is per connection: 8 x 25 = 200 requests/s
READ_TARGET, WRITE_TARGET, P99_TARGET = 0.5, 0.25, 50.0
BARE_LIST = "GET /campaigns/:brand?limit=50"  # 50 rows of email_campaigns, as they come
BARE_EMAILS = "GET /campaign/:id/emails?limit=50"  # the sent campaign's 50 email_campaign_emails rows


@dataclass(frozen=True)
class Target:
    name: str
    server: str  # "mailroom" or "bare"
    path: str
    body: str | None = None  # JSON posted instead of a GET
    reference: str = "GET /campaign/:id"  # the bare request it is compared with
    same_size: str | None = None  # a bare request answering as many rows, when that is not one


@dataclass(frozen=True)
class Result:
    rps: float
    p99: float  # milliseconds
    errors: int  # non-2xx answers and socket errors
    sending: float = 0.0  # share of the window during which the campaign was still sending


@dataclass(frozen=True)
class Run:
    idle: dict[str, Result]
    busy: dict[str, Result]
    rate: Load  # hey at a fixed rate during a send
    rate_sending: float


def parse_wrk(output: str) -> Result:
    """Requests/sec, the 99th percentile of --latency's distribution, and what went wrong."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if not (rps and p99):
        raise BenchError(f"could not read wrk's report:\n{output}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[p99.group(2)]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    if sockets := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(n) for n in sockets.groups())
    return Result(float(rps.group(1)), float(p99.group(1)) * scale, errors)


def run_load(cmd: list[str], conn: Conn | None, campaign: str) -> tuple[str, int, float]:
    """A load generator run to its end: its output, its status, and the share of its window during which
    ``campaign`` was still sending (0.0 without ``conn``)."""
    started, finished = time.monotonic(), None
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while load.poll() is None:
            if conn is not None and finished is None and progress(conn, campaign)[1]:
                finished = time.monotonic()
            time.sleep(0.1)
        output = load.communicate()[0]
    finally:
        stop(load)
    ended = time.monotonic()
    sending = ((finished or ended) - started) / (ended - started) if conn is not None else 0.0
    return output, load.returncode, sending


class BareServer(Server):
    """bench/bare_api.py with ``workers`` processes; waited for, logged and stopped as `mailroom serve` is."""

    def __init__(self, url: str, tmp: Path, workers: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "bare.log"
        cmd = [sys.executable, str(BARE), "--port", str(self.port), "--workers", str(workers)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*cmd, "--database-url", libpq_url(url)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )


def api_processes(args: argparse.Namespace, env: dict[str, str]) -> tuple[int, list[str], str]:
    """(API processes each server gets, options for `mailroom serve`, a note when --workers cannot apply)."""
    if "--workers" in command(env, "serve", "--help"):
        workers = args.workers or os.cpu_count() or 1
        return workers, ["--workers", str(workers)], ""
    asked = f" (--workers {args.workers} not applied)" if args.workers else ""
    return 1, [], f"`mailroom serve` has no --workers option: one API process each{asked}"


class Bench:
    def __init__(self, args: argparse.Namespace, url: str, env: dict[str, str], tmp: Path) -> None:
        self.args, self.url, self.env, self.tmp = args, url, env, tmp
        self.brand, self.user, self.token = bootstrap(env)
        self.headers = {"Authorization": f"Bearer {self.token}", "X-Rechat-Brand": self.brand}
        self.servers: dict[str, Server] = {}

    def seed(self) -> str:
        """Campaigns for the listing, and one small campaign sent and partly opened; its id."""
        seed_contacts(self.url, self.brand, self.user, self.args.contacts, "Bench API")
        with httpx.Client(base_url=self.servers["mailroom"].base, headers=self.headers, timeout=60) as api:
            # Scheduled, not drafts (the listing leaves drafts out unless asked), and far enough ahead
            # never to be sent here.
            for _ in range(CAMPAIGNS):
                create(api, "/emails", datetime.now(UTC) + timedelta(days=365))
            to = [{"recipient_type": "Email", "email": f"r{i}@bench.example"} for i in range(1, SMALL + 1)]
            due = datetime.now(UTC) + timedelta(seconds=1)
            body = {"to": to, "subject": "Open house", "html": WRITE_HTML, "due_at": due.isoformat()}
            answer = api.post("/emails/individual", json=body)
            if answer.status_code >= 300:
                raise BenchError(f"POST /emails/individual answered {answer.status_code}: {answer.text}")
            small = str(answer.json()["data"]["id"])
            with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
                self.wait_finished(conn, small)
                self.open_a_few(api, conn, small)
        return small

    def open_a_few(self, api: httpx.Client, conn: Conn, campaign: str) -> None:
        """Opens of a few of the small campaign's emails: the worker's settler makes notifications of them."""
        tokens = TrackingTokens(SecretBox(self.env["MAILROOM_SECRET_KEY"]))
        # An open within 30 s of sending is taken for an echo and tells no one: these were sent "a minute ago".
        conn.execute("UPDATE emails SET sent_at = sent_at - interval '1 minute' WHERE campaign = %s", (campaign,))
        for (email,) in conn.execute("SELECT id FROM emails WHERE campaign = %s LIMIT 5", (campaign,)).fetchall():
            api.get(f"/t/o/{tokens.open(uuid.UUID(str(email)))}", headers={"User-Agent": "Mozilla/5.0 (bench)"})
        deadline = time.monotonic() + 30
        query = 'SELECT count(*) FROM notifications WHERE "user" = %s'
        while (found := conn.execute(query, (self.user,)).fetchone()) and found[0] == 0:
            if time.monotonic() > deadline:
                print("  no notification was made of the opens: GET /notifications lists none", file=sys.stderr)
                return
            time.sleep(0.2)

    def wait_finished(self, conn: Conn, campaign: str) -> None:
        mailroom = self.servers["mailroom"]
        deadline = time.monotonic() + self.args.timeout
        while not progress(conn, campaign)[1]:
            if mailroom.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"campaign {campaign} did not finish sending\n{mailroom.tail()}")
            time.sleep(0.2)

    def targets(self, small: str) -> list[Target]:
        to = [{"recipient_type": "Email", "email": "write@bench.example"}]
        draft = json.dumps({"to": to, "subject": WRITE_SUBJECT, "html": WRITE_HTML, "due_at": None})
        listing = f"/brands/{self.brand}/emails/campaigns?limit=50"
        return [
            Target("GET /emails/:id", "mailroom", f"/emails/{small}"),
            Target("GET /brands/:brand/emails/campaigns?limit=50", "mailroom", listing, same_size=BARE_LIST),
            Target("GET /emails/:id/emails", "mailroom", f"/emails/{small}/emails", same_size=BARE_EMAILS),
            Target("GET /emails/:id/stats", "mailroom", f"/emails/{small}/stats"),
            Target("GET /brands/:brand/emails/quota", "mailroom", f"/brands/{self.brand}/emails/quota"),
            Target("GET /notifications", "mailroom", "/notifications"),
            Target("POST /emails", "mailroom", "/emails", draft, "POST /insert"),
            Target("GET /campaign/:id", "bare", f"/campaign/{small}"),
            Target(BARE_LIST, "bare", f"/campaigns/{self.brand}?limit=50"),
            Target(BARE_EMAILS, "bare", f"/campaign/{small}/emails?limit=50"),
            Target("POST /insert", "bare", "/insert", json.dumps({"subject": WRITE_SUBJECT, "html": WRITE_HTML})),
        ]

    def check(self, target: Target) -> None:
        """One request answered 2xx before any load: a fast error would make a fine-looking figure."""
        with httpx.Client(base_url=self.servers[target.server].base, headers=self.headers, timeout=30) as api:
            if target.body is None:
                answer = api.get(target.path)
            else:
                answer = api.post(target.path, content=target.body, headers={"Content-Type": "application/json"})
        if not 200 <= answer.status_code < 300:
            raise BenchError(f"{target.name} answered {answer.status_code}: {answer.text[:500]}")
        if "limit=50" in target.path and (found := len(answer.json()["data"])) != 50:
            raise BenchError(f"{target.name}: {found} campaigns, not 50")
        if target.body is not None:
            self.forget_writes()

    def forget_writes(self) -> None:
        """The rows a write measurement made, removed: thousands of drafts would slow the next listing."""
        with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
            conn.execute("DELETE FROM email_campaigns WHERE brand = %s AND subject = %s", (self.brand, WRITE_SUBJECT))
            conn.execute("TRUNCATE bare_bench_rows")
            conn.execute("VACUUM ANALYZE email_campaigns")

    def measure(self, target: Target, conn: Conn | None = None, campaign: str = "") -> Result:
        """wrk on one request; with ``conn``, also how much of the window ``campaign`` was sending."""
        assert WRK is not None
        a = self.args
        cmd = [WRK, "-t2", f"-c{a.connections}", f"-d{a.duration:g}s", "--latency", "--timeout", "10s"]
        cmd += [arg for name, value in self.headers.items() for arg in ("-H", f"{name}: {value}")]
        if target.body is not None:
            script = self.tmp / "post.lua"
            script.write_text(LUA % target.body)
            cmd += ["-s", str(script)]
        output, status, sending = run_load([*cmd, self.servers[target.server].base + target.path], conn, campaign)
        if status != 0:
            raise BenchError(f"wrk failed ({status}):\n{output}")
        if target.body is not None:
            self.forget_writes()
        found = parse_wrk(output)
        return Result(found.rps, found.p99, found.errors, sending)

    @contextmanager
    def sending(self, label: str) -> Iterator[tuple[Conn, str]]:
        """A fresh individual campaign to every contact, due two seconds ahead, once it has started sending;
        on leaving, waits for it to finish so the next measurement starts quiet."""
        mailroom = self.servers["mailroom"]
        with httpx.Client(base_url=mailroom.base, headers=self.headers, timeout=60) as api:
            campaign = create(api, "/emails/individual", datetime.now(UTC) + timedelta(seconds=2))
        with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while progress(conn, campaign)[0] == 0:  # measure while it sends, not while it waits
                if mailroom.process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"{label}: the campaign did not start sending\n{mailroom.tail()}")
                time.sleep(0.05)
            yield conn, campaign
            self.wait_finished(conn, campaign)

    def one_run(self, n: int, targets: list[Target]) -> Run:
        idle = {t.name: self.measure(t) for t in targets}
        print(f"  run {n}: idle measured", file=sys.stderr)
        # A fresh send for each request: one campaign to 20,000 is sent before nine windows are over.
        busy: dict[str, Result] = {}
        for target in targets:
            with self.sending(f"run {n}, {target.name}") as (conn, campaign):
                busy[target.name] = self.measure(target, conn, campaign)
        assert HEY is not None
        cmd = [HEY, "-z", f"{self.args.duration:g}s", "-c", str(RATE_CONNECTIONS), "-q", str(RATE_PER_CONNECTION)]
        cmd += [arg for name, value in self.headers.items() for arg in ("-H", f"{name}: {value}")]
        with self.sending(f"run {n}, fixed rate") as (conn, campaign):
            output, status, share = run_load([*cmd, self.servers["mailroom"].base + targets[0].path], conn, campaign)
        if status != 0:
            raise BenchError(f"hey failed ({status}):\n{output}")
        run = Run(idle, busy, parse_hey(output), share)
        print(f"  run {n}: done", file=sys.stderr)
        return run


def median_result(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p99 for r in results),
        sum(r.errors for r in results),
        statistics.median(r.sending for r in results),
    )


def table(title: str, targets: list[Target], results: dict[str, Result], busy: bool) -> dict[str, float]:
    """Prints mailroom's requests next to their bare reference; the ratios, by request."""
    print(f"\n{title}")
    extra = f" {'sending':>8} {'bare s.':>8}" if busy else ""  # the share of each one's window
    print(
        f"{'request':<46} {'mailroom r/s':>12} {'p99 ms':>8} {'bare r/s':>9} {'p99 ms':>8} {'ratio':>6}"
        f" {'same size':>9}{extra} errors"
    )
    ratios: dict[str, float] = {}
    for target in (t for t in targets if t.server == "mailroom"):
        ours, bare = results[target.name], results[target.reference]
        ratios[target.name] = ours.rps / bare.rps if bare.rps else 0.0
        shares = f" {ours.sending:>8.0%} {bare.sending:>8.0%}" if busy else ""
        like = results[target.same_size] if target.same_size else None
        same = f"{ours.rps / like.rps:>9.2f}" if like and like.rps else f"{'-':>9}"
        print(
            f"{target.name:<46} {ours.rps:>12,.0f} {ours.p99:>8.1f} {bare.rps:>9,.0f} {bare.p99:>8.1f} "
            f"{ratios[target.name]:>6.2f} {same}{shares} {ours.errors + bare.errors:>6}"
        )
    return ratios


def report(args: argparse.Namespace, processes: int, note: str, targets: list[Target], runs: list[Run]) -> None:
    print(
        f"\nmailroom API against a bare baseline: wrk -t2 -c{args.connections} -d{args.duration:g}s, "
        f"{processes} API process(es) each, {args.contacts:,} recipients per send, {os.cpu_count()} CPUs"
    )
    if note:
        print(note)
    print(
        "reads are compared with bare GET /campaign/:id, POST /emails with bare POST /insert; 'same size' compares"
        f"\nthe listing with bare {BARE_LIST} and the recipients page with bare {BARE_EMAILS}"
        "\n(50 rows, not one). During a send, each"
        "\nrequest gets a fresh campaign; 'sending' ('bare s.' for the bare request) is the share of wrk's window"
        "\nduring which that campaign was still sending."
    )
    hey = f"hey -c {RATE_CONNECTIONS} -q {RATE_PER_CONNECTION}"
    rate_head = f"fixed rate: GET /emails/:id, {hey} ({RATE_CONNECTIONS * RATE_PER_CONNECTION} req/s), during a send"
    for n, run in enumerate(runs, start=1):
        table(f"run {n}, idle", targets, run.idle, busy=False)
        table(f"run {n}, during a send", targets, run.busy, busy=True)
        print(
            f"{rate_head}: p99 {run.rate.p99:.1f} ms, p50 {run.rate.p50:.1f} ms, {run.rate.rps:,.0f} req/s answered, "
            f"sending {run.rate_sending:.0%}, errors {run.rate.errors}"
        )
    names = [t.name for t in targets]
    idle = table("median, idle", targets, {k: median_result([r.idle[k] for r in runs]) for k in names}, busy=False)
    busy = table("median, during a send", targets, {k: median_result([r.busy[k] for r in runs]) for k in names}, True)
    p99 = statistics.median(r.rate.p99 for r in runs)
    print(f"{rate_head}: p99 {p99:.1f} ms (median)")
    ratios = [(f"{k} ({when})", v) for when, found in (("idle", idle), ("sending", busy)) for k, v in found.items()]
    read = min(((k, v) for k, v in ratios if k.startswith("GET ")), key=lambda kv: kv[1])
    write = min(((k, v) for k, v in ratios if k.startswith("POST ")), key=lambda kv: kv[1])

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    print(
        f"\ntargets: every read ratio >= {READ_TARGET}: lowest {read[1]:.2f}, {read[0]}: "
        f"{verdict(read[1] >= READ_TARGET)}\n"
        f"         POST /emails ratio >= {WRITE_TARGET}: lowest {write[1]:.2f}, {write[0]}: "
        f"{verdict(write[1] >= WRITE_TARGET)}\n"
        f"         fixed-rate p99 < {P99_TARGET:.0f} ms: {p99:.1f} ms: {verdict(p99 < P99_TARGET)}"
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="runs; medians reported")
    p.add_argument("--duration", type=float, default=10, help="seconds of each wrk (and the fixed-rate hey) run")
    p.add_argument("--connections", type=int, default=32, help="wrk's connections (-c), over 2 threads")
    p.add_argument("--workers", type=int, default=None, help="API processes each server gets (default: one a CPU)")
    p.add_argument("--contacts", type=int, default=20_000, help="recipients of each campaign sent while measuring")
    p.add_argument("--timeout", type=float, default=600, help="seconds one campaign may take to send")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if not SINK.exists() or WRK is None or HEY is None:
        print(NEEDS, file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so both servers, the sink and the database are still cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="mailroom-bench-"))
        stack.callback(shutil.rmtree, tmp, True)
        tmp.chmod(0o755)  # an embedded server runs as its own system user when we are root
        try:
            url = stack.enter_context(fresh_database(tmp))
            sink = Sink(tmp)
            stack.callback(sink.stop)
            env = serve_env(url, tmp, sink.port)
            command(env, "migrate")
            bench = Bench(args, url, env, tmp)
            processes, options, note = api_processes(args, env)
            if note:
                print(f"  {note}", file=sys.stderr)
            mailroom = Server(env, tmp, *options)
            stack.callback(mailroom.stop)
            bare = BareServer(url, tmp, processes)
            stack.callback(bare.stop)
            bench.servers = {"mailroom": mailroom, "bare": bare}
            mailroom.wait_healthy()
            bare.wait_healthy()
            small = bench.seed()
            targets = bench.targets(small)
            for target in targets:
                bench.check(target)
            runs = [bench.one_run(n, targets) for n in range(1, args.repeat + 1)]
        except (BenchError, psycopg.OperationalError) as exc:  # the latter: e.g. the server's max_connections
            print(f"bench/api.py: {exc}", file=sys.stderr)
            return 1
        report(args, processes, note, targets, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
