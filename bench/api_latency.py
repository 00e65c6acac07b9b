"""API latency while a campaign sends: `GET /emails/:id` through `mailroom serve`, idle and during a send.

    .venv/bin/python bench/api_latency.py [--contacts 20000] [--repeat 3] [--during 10] [--connections 8]

`mailroom serve` runs its sending worker in a child process, so a busy send should not slow the API.
This bench checks it: a fresh database (as bench/send.py makes it), N contacts, and
`mailroom serve` as a subprocess sending through SMTP to Postfix's smtp-sink on loopback. Per run,
`hey` measures `GET /emails/<draft id>` for 5 s while nothing sends, then again while an individual
campaign to all of them sends (up to --during seconds, or until the send finishes). Prints p50, p99 and
requests/s both ways, their ratio, and the send's messages/s over the same window; then medians.
Everything it started is stopped, and its database dropped, however it ends. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))  # send.py: the database, the sink

from send import SINK, BenchError, Sink, free_port, fresh_database, seed_contacts

from mailroom.db import libpq_url

MAILROOM = Path(sys.executable).with_name("mailroom")
HEY = shutil.which("hey")
NO_SINK = (
    "bench/api_latency.py needs Postfix's test program /usr/sbin/smtp-sink.\n"
    "Install it with:  apt-get install -y postfix   (the bench never starts Postfix itself)"
)
NO_HEY = "bench/api_latency.py needs the HTTP load generator hey.\nInstall it with:  apt-get install -y hey"
IDLE_SECONDS = 5
HTML = "<html><body><p>Hi {{recipient.first_name}}, three new homes near you this weekend.</p></body></html>"


@dataclass(frozen=True)
class Load:
    """What hey printed: latencies in milliseconds, requests per second, non-2xx answers."""

    p10: float
    p50: float
    p99: float
    rps: float
    requests: int
    errors: int


@dataclass(frozen=True)
class Run:
    idle: Load
    busy: Load
    sent: int  # messages recorded sent during the busy window
    seconds: float  # length of the busy window

    @property
    def send_rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def parse_hey(output: str) -> Load:
    """The latency distribution and Requests/sec of hey's default report."""
    found = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", output)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    codes = [(int(code), int(n)) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", output)]
    if not (rps and {10, 50, 99} <= found.keys() and codes):
        raise BenchError(f"could not read hey's report:\n{output}")
    errors = sum(n for code, n in codes if not 200 <= code < 300)
    errors += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+Get ", output, re.MULTILINE))
    return Load(found[10], found[50], found[99], float(rps.group(1)), sum(n for _, n in codes), errors)


class Server:
    """`mailroom serve` (with its worker child) in its own process group, output to a log file."""

    def __init__(self, env: dict[str, str], tmp: Path, *options: str) -> None:
        """``options`` go on the command line after the port (bench/api.py passes --workers)."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "serve.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(MAILROOM), "serve", "--port", str(self.port), *options],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"mailroom serve did not answer /health\n{self.tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the worker child too, should it linger
        self.process.wait(timeout=10)


def serve_env(url: str, tmp: Path, sink_port: int) -> dict[str, str]:
    """What `mailroom serve` and the other commands run with; a developer's MAILROOM_* cannot leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    env.update(
        MAILROOM_DATABASE_URL=url,
        MAILROOM_DATA_DIR=str(tmp / "data"),
        MAILROOM_TRANSPORT="smtp",
        MAILROOM_SMTP_URL=f"smtp://127.0.0.1:{sink_port}?helo=bench.example",
        MAILROOM_SECRET_KEY=secrets.token_urlsafe(32),  # 43 characters
    )
    return env


def command(env: dict[str, str], *args: str) -> str:
    """One `mailroom` command; its standard output."""
    done = subprocess.run([str(MAILROOM), *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise BenchError(f"mailroom {args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def bootstrap(env: dict[str, str]) -> tuple[str, str, str]:
    """`mailroom bootstrap`: (brand id, user id, token)."""
    email = f"agent-{secrets.token_hex(4)}@bench.example"
    out = command(env, "bootstrap", "--brand", "Bench API", "--email", email, "--first", "Ann", "--last", "Agent")
    try:
        found = json.loads(out.strip().splitlines()[-1])
        return str(found["brand"]), str(found["user"]), str(found["token"])
    except (IndexError, KeyError, TypeError, ValueError):
        raise BenchError(f"unexpected output of mailroom bootstrap:\n{out}") from None


def create(api: httpx.Client, path: str, due_at: datetime | None) -> str:
    body = {
        "to": [{"recipient_type": "AllContacts"}],
        "subject": "Hello {{recipient.first_name}}",
        "html": HTML,
        "due_at": due_at.isoformat() if due_at else None,
    }
    answer = api.post(path, json=body)
    if answer.status_code >= 300:
        raise BenchError(f"POST {path} answered {answer.status_code}: {answer.text}")
    data = answer.json()
    campaign = data.get("data", data).get("id") if isinstance(data, dict) else None
    if not campaign:
        raise BenchError(f"POST {path}: no id in {answer.text[:500]}")
    return str(campaign)


def hey(url: str, token: str, brand: str, seconds: float, connections: int) -> subprocess.Popen[str]:
    assert HEY is not None
    command = [HEY, "-z", f"{seconds:g}s", "-c", str(connections)]
    command += ["-H", f"Authorization: Bearer {token}", "-H", f"X-Rechat-Brand: {brand}", url]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen[str], timeout: float) -> Load:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("hey did not finish in time") from None
    finally:
        stop(process)
    if process.returncode != 0:
        raise BenchError(f"hey failed ({process.returncode}):\n{output}")
    return parse_hey(output)


def stop(process: subprocess.Popen[str]) -> None:
    """Whatever interrupts the bench (an error, Ctrl-C, SIGTERM), hey must not go on loading the port."""
    if process.poll() is None:
        process.kill()
        process.communicate()


def progress(conn: psycopg.Connection[tuple[object, ...]], campaign: str) -> tuple[int, bool]:
    """(sent so far, finished) from the campaign's counters: one row, cheap to poll."""
    row = conn.execute(
        "SELECT recipients_count, sent, failed, failed_at, failure FROM email_campaigns WHERE id = %s",
        (uuid.UUID(campaign),),
    ).fetchone()
    assert row is not None
    count, sent, failed, failed_at, failure = row
    if failed_at is not None:
        raise BenchError(f"the campaign failed: {failure}")
    assert isinstance(sent, int) and isinstance(failed, int)
    return sent, isinstance(count, int) and sent + failed >= count


def one_run(n: int, args: argparse.Namespace, server: Server, url: str, ids: tuple[str, str, str]) -> Run:
    brand, _, token = ids
    headers = {"Authorization": f"Bearer {token}", "X-Rechat-Brand": brand}
    with httpx.Client(base_url=server.base, headers=headers, timeout=30) as api:
        draft = create(api, "/emails", None)
        target = f"{server.base}/emails/{draft}"
        if (answer := api.get(f"/emails/{draft}")).status_code != 200:
            raise BenchError(f"GET /emails/{draft} answered {answer.status_code}: {answer.text}")
        idle = finish(hey(target, token, brand, IDLE_SECONDS, args.connections), IDLE_SECONDS + 30)
        campaign = create(api, "/emails/individual", datetime.now(UTC) + timedelta(seconds=2))
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while (sent := progress(conn, campaign)[0]) == 0:  # measure while it sends, not while it waits
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"run {n}: the campaign did not start sending\n{server.tail()}")
            time.sleep(0.05)
        started, first = time.monotonic(), sent
        load = hey(target, token, brand, args.during, args.connections)
        try:
            done = False
            while load.poll() is None and time.monotonic() < started + args.during + 30:
                sent, done = progress(conn, campaign)
                if done:
                    load.send_signal(signal.SIGINT)  # hey stops and prints what it measured so far
                    break
                time.sleep(0.1)
            ended = time.monotonic()
            sent = progress(conn, campaign)[0] if not done else sent
        except BaseException:
            stop(load)
            raise
        busy = finish(load, 30)
        # The next run's idle figure needs a quiet server: wait out this send (bounded).
        deadline = time.monotonic() + args.timeout
        while not progress(conn, campaign)[1]:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"run {n}: the campaign did not finish in {args.timeout:.0f} s\n{server.tail()}")
            time.sleep(0.5)
    run = Run(idle, busy, sent - first, ended - started)
    print(
        f"  run {n}: idle p50 {idle.p50:.1f} ms p99 {idle.p99:.1f} ms; "
        f"sending p50 {busy.p50:.1f} ms p99 {busy.p99:.1f} ms over {run.seconds:.1f} s, {run.send_rate:,.0f} msg/s",
        file=sys.stderr,
    )
    return run


def report(args: argparse.Namespace, runs: list[Run]) -> None:
    print(
        f"\nmailroom API latency while sending: GET /emails/:id, hey -c {args.connections}, "
        f"{args.contacts:,} recipients, {os.cpu_count()} CPUs"
    )
    head = f"{'run':>6} {'idle p50':>9} {'idle p99':>9} {'idle r/s':>9} {'send p50':>9} {'send p99':>9}"
    print(head + f" {'send r/s':>9} {'p50 x':>6} {'p99 x':>6} {'r/s x':>6} {'msg/s':>7} {'errors':>6}")

    def line(label: str, v: list[float], errors: int) -> str:
        return (
            f"{label:>6} {v[0]:>9.1f} {v[1]:>9.1f} {v[2]:>9,.0f} {v[3]:>9.1f} {v[4]:>9.1f} {v[5]:>9,.0f} "
            f"{v[6]:>6.2f} {v[7]:>6.2f} {v[8]:>6.2f} {v[9]:>7,.0f} {errors:>6}"
        )

    rows = [
        [
            r.idle.p50,
            r.idle.p99,
            r.idle.rps,
            r.busy.p50,
            r.busy.p99,
            r.busy.rps,
            r.busy.p50 / r.idle.p50,
            r.busy.p99 / r.idle.p99,
            r.busy.rps / r.idle.rps,
            r.send_rate,
        ]
        for r in runs
    ]
    for i, (r, row) in enumerate(zip(runs, rows, strict=True), start=1):
        print(line(str(i), row, r.idle.errors + r.busy.errors))
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(line("median", medians, sum(r.idle.errors + r.busy.errors for r in runs)))
    print("(latencies in ms; 'x' columns: during the send over idle; msg/s: the send over the same window)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contacts", type=int, default=20_000, help="recipients of the campaign sent in each run")
    p.add_argument("--repeat", type=int, default=3, help="runs, each with a fresh campaign; medians reported")
    p.add_argument("--during", type=float, default=10, help="longest hey run while the campaign sends, seconds")
    p.add_argument("--connections", type=int, default=8, help="hey's concurrent connections (-c)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one campaign may take to send")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if not SINK.exists():
        print(NO_SINK, file=sys.stderr)
        return 2
    if HEY is None:
        print(NO_HEY, file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so the server, the sink and the database are still cleaned up.
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
            ids = bootstrap(env)
            seed_contacts(url, ids[0], ids[1], args.contacts, "Bench API")
            server = Server(env, tmp)
            stack.callback(server.stop)
            server.wait_healthy()
            runs = [one_run(n, args, server, url, ids) for n in range(1, args.repeat + 1)]
        except BenchError as exc:
            print(f"bench/api_latency.py: {exc}", file=sys.stderr)
            return 1
        report(args, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
