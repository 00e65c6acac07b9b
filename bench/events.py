"""Events benchmark: signed Mailgun webhooks and tracking hits into `mailroom serve`, then exact counters.

    .venv/bin/python bench/events.py [--emails 100000] [--events 500000] [--hits 200000] [--repeat 1]

Creates a fresh database (see bench/send.py), a campaign of N emails already sent (set-based SQL, as
the sender records a Mailgun batch send: one provider id per 1,000 recipients), and starts
`mailroom serve` (its worker child runs the settler). Then, per run:

* webhooks: M signed Mailgun events (delivered for everyone, opens and clicks for a share of the
  recipients, about 5% posted twice with the same event id, a few forged), one per request as Mailgun
  posts them, from `wrk` with many connections; prints events/s accepted (server side: events stored
  over the time between the first and the last one stored), seconds from the last event to settled
  counters, and checks every counter level against the true counts computed from what was posted.
* tracking: H hits on `/t/o/<token>` and `/t/c/<token>` the same way, and the same checks.

wrk (Debian's package) generates the load: a Python client measures itself, not the server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # send.py, api_latency.py

from api_latency import Server, bootstrap  # noqa: E402
from send import BenchError, fresh_database  # noqa: E402

from mailroom.crypto import SecretBox  # noqa: E402
from mailroom.db import libpq_url  # noqa: E402
from mailroom.tracking.webhooks import sign  # noqa: E402
from mailroom.tracking_links import TrackingTokens  # noqa: E402

WRK = shutil.which("wrk")
NO_WRK = "bench/events.py needs the HTTP load generator wrk.\nInstall it with:  apt-get install -y wrk"
SIGNING_KEY = "key-bench-webhook-signing"
DOMAIN = "mg.bench.example"
LINKS = ["https://homes.example/listing/1", "https://homes.example/listing/2", "https://homes.example/open-house"]
DESKTOP = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4"
COUNTERS = ("delivered", "opened", "clicked")

# Each wrk thread takes every n-th line of the file; POST lines are bodies, GET lines are paths. A thread
# stops once all its lines are answered; the bench stops wrk once the database holds everything it should.
LUA = """
local lines, i, done, mode, path = {}, 0, 0, nil, nil
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local file, threads = args[1], tonumber(args[2])
  mode, path = args[3], args[4]
  -- wrk asks thread 0 for one request before any connection (to check pipelining) and never sends it.
  if id == 0 then i = -1 end
  local n = 0
  for line in io.lines(file) do
    if n % threads == id then lines[#lines + 1] = line end
    n = n + 1
  end
end
function request()
  i = i + 1
  if i == 0 or i > #lines then
    return wrk.format("GET", "/health")  -- a connection with nothing left waits for the others
  end
  if mode == "post" then
    return wrk.format("POST", path, {["Content-Type"] = "application/json"}, lines[i])
  end
  return wrk.format("GET", lines[i])
end
function response(status, headers, body)
  done = done + 1
  if done >= #lines then wrk.thread:stop() end  -- stop only once every line has been answered
end
"""

SEED = """
WITH c AS (
    INSERT INTO email_campaigns (id, brand, created_by, "from", subject, html, due_at, executed_at, individual,
                                 recipients_count, sent, accepted)
    VALUES (%(campaign)s, %(brand)s, %(user)s, %(user)s, 'Open houses', '<p>x</p>', now() - interval '2 hours',
            now() - interval '2 hours', true, %(n)s, %(n)s, %(n)s)
    RETURNING id
), e AS (
    INSERT INTO emails (id, "from", "to", subject, esp_message_id, domain, campaign, sent_at, accepted, links)
    SELECT md5(%(campaign)s::text || 'email' || i)::uuid, 'Ann <ann@bench.example>',
           ARRAY['r' || i || '@bench.example'], 'Open houses',
           '<batch-' || (i / 1000) || '.' || %(campaign)s::text || '@' || %(domain)s || '>', %(domain)s,
           %(campaign)s,
           now() - interval '1 hour', 1, %(links)s
    FROM generate_series(0, %(n)s - 1) i
)
INSERT INTO email_campaign_emails (id, campaign, seq, email, email_address, send_type, accepted)
SELECT md5(%(campaign)s::text || 'row' || i)::uuid, %(campaign)s, i + 1,
       md5(%(campaign)s::text || 'email' || i)::uuid, 'r' || i || '@bench.example', 'To', 1
FROM generate_series(0, %(n)s - 1) i
"""


@dataclass
class Phase:
    name: str
    posted: int
    stored: int
    per_second: float
    settle_lag: float
    exact: bool
    detail: str


def email_id(campaign: uuid.UUID, i: int) -> uuid.UUID:
    """The id SEED gives the i-th recipient's emails row."""
    return uuid.UUID(hashlib.md5(f"{campaign}email{i}".encode()).hexdigest())


def seed(url: str, brand: str, user: str, emails: int) -> uuid.UUID:
    campaign = uuid.uuid4()
    started = time.perf_counter()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(
            SEED, {"campaign": campaign, "brand": brand, "user": user, "n": emails, "domain": DOMAIN, "links": LINKS}
        )
        conn.execute("ANALYZE emails")
        conn.execute("ANALYZE email_campaign_emails")
    print(f"  {emails:,} sent emails seeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return campaign


@dataclass
class Truth:
    """What the counters must say, computed from what was posted."""

    distinct: dict[str, set[int]]  # type -> recipients with a counted event
    raw: dict[str, int]  # type -> events (distinct provider event ids) on the emails rows
    valid: int  # requests that must be stored


def webhook_bodies(campaign: uuid.UUID, emails: int, events: int, rng: random.Random) -> tuple[list[str], Truth]:
    """Each run's campaign has its own message ids, as Mailgun's are unique per message."""
    truth = Truth({t: set() for t in COUNTERS}, Counter(), 0)
    stamp = time.time()
    bodies: list[str] = []
    posted: list[tuple[str, int, dict[str, object]]] = []
    for i in range(emails):
        posted.append(("delivered", i, {}))
    remaining = max(0, int(events / 1.05) - emails)
    openers = rng.sample(range(emails), int(emails * 0.6))
    clickers = rng.sample(range(emails), int(emails * 0.3))
    for n in range(remaining):
        if n % 100 < 65:
            posted.append(("opened", openers[n % len(openers)], {"client-info": {"user-agent": DESKTOP}}))
        else:
            url = LINKS[n % 2]  # two of the three links: never every link, so no scanner rule
            posted.append(
                ("clicked", clickers[n % len(clickers)], {"url": url, "client-info": {"user-agent": DESKTOP}})
            )
    rng.shuffle(posted)

    def body(kind: str, i: int, extra: dict[str, object], event_id: str, *, forged: bool = False) -> str:
        token = secrets.token_hex(25)
        signature = sign(SIGNING_KEY, str(int(stamp)), token)
        if forged:
            signature = signature[::-1]
        data = {
            "id": event_id,
            "event": kind,
            "timestamp": stamp - 1800,
            "recipient": f"r{i}@bench.example",
            "message": {"headers": {"message-id": f"batch-{i // 1000}.{campaign}@{DOMAIN}"}},
            **extra,
        }
        return json.dumps({"signature": {"timestamp": str(int(stamp)), "token": token, "signature": signature},
                           "event-data": data}, separators=(",", ":"))  # fmt: skip

    for kind, i, extra in posted:
        event_id = secrets.token_urlsafe(16)
        bodies.append(body(kind, i, extra, event_id))
        truth.valid += 1
        truth.distinct[kind].add(i)
        truth.raw[kind] += 1
        if rng.random() < 0.05:  # Mailgun posting the same event again: stored, never counted twice
            bodies.append(body(kind, i, extra, event_id))
            truth.valid += 1
        if rng.random() < 0.002:
            bodies.append(body(kind, i, extra, secrets.token_urlsafe(16), forged=True))
    rng.shuffle(bodies)
    return bodies, truth


def tracking_paths(
    campaign: uuid.UUID, emails: int, hits: int, tokens: TrackingTokens, rng: random.Random
) -> tuple[list[str], Truth]:
    truth = Truth({t: set() for t in COUNTERS}, Counter(), 0)
    openers = rng.sample(range(emails), int(emails * 0.5))
    clickers = rng.sample(range(emails), int(emails * 0.25))
    paths: list[str] = []
    for n in range(hits):
        if n % 100 < 70:
            i = openers[n % len(openers)]
            paths.append(f"/t/o/{tokens.open(email_id(campaign, i))}")
            kind = "opened"
        else:
            i = clickers[n % len(clickers)]
            paths.append(f"/t/c/{tokens.click(email_id(campaign, i), n % 2)}")
            kind = "clicked"
        truth.distinct[kind].add(i)
        truth.raw[kind] += 1
        truth.valid += 1
    rng.shuffle(paths)
    return paths, truth


def counts(conn: psycopg.Connection, campaign: uuid.UUID) -> dict[str, object]:
    campaign_row = conn.execute(
        f"SELECT {', '.join(COUNTERS)} FROM email_campaigns WHERE id = %s", (campaign,)
    ).fetchone()
    rows = conn.execute(
        f"SELECT {', '.join(f'sum({c})' for c in COUNTERS)} FROM email_campaign_emails WHERE campaign = %s",
        (campaign,),
    ).fetchone()
    raw = conn.execute(
        f"SELECT {', '.join(f'sum({c})' for c in COUNTERS)} FROM emails WHERE campaign = %s", (campaign,)
    ).fetchone()
    assert campaign_row is not None and rows is not None and raw is not None
    return {
        "campaign": dict(zip(COUNTERS, campaign_row, strict=True)),
        "rows": dict(zip(COUNTERS, (int(v or 0) for v in rows), strict=True)),
        "raw": dict(zip(COUNTERS, (int(v or 0) for v in raw), strict=True)),
    }


def run_phase(
    name: str, server: Server, url: str, campaign: uuid.UUID, lines: list[str], truth: Truth, before: dict[str, object],
    *, mode: str, path: str, tmp: Path, connections: int, timeout: float,
) -> Phase:  # fmt: skip
    assert WRK is not None
    data = tmp / f"{name}.lines"
    data.write_text("\n".join(lines) + "\n")
    script = tmp / "replay.lua"
    script.write_text(LUA)
    threads = 2
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        start_id = conn.execute("SELECT coalesce(max(id), 0) FROM email_events").fetchone()
        assert start_id is not None
        baseline = int(start_id[0])
        command = [WRK, f"-t{threads}", f"-c{connections}", f"-d{int(timeout)}s", "-s", str(script), server.base,
                   "--", str(data), str(threads), mode, path]  # fmt: skip
        wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        issued, still_since = baseline, time.monotonic()
        try:
            # Done when everything is stored, or nothing more arrives for 10 s (some requests failed).
            # Progress is read off the id sequence, and rows are counted only once it says all could be
            # there: counting them every half second took a tenth of a core from the server measured.
            while time.monotonic() < deadline and time.monotonic() - still_since < 10:
                found = conn.execute("SELECT last_value FROM email_events_id_seq").fetchone()
                now_issued = int(found[0]) if found else baseline
                if now_issued != issued:
                    issued, still_since = now_issued, time.monotonic()
                if wrk.poll() is not None:
                    break
                if issued - baseline >= truth.valid:
                    counted = conn.execute("SELECT count(*) FROM email_events WHERE id > %s", (baseline,)).fetchone()
                    if counted is not None and counted[0] >= truth.valid:
                        break
                time.sleep(0.5)
        finally:
            wrk.terminate()
            output = wrk.communicate(timeout=30)[0]
        span = conn.execute(
            "SELECT count(*), min(created_at), max(created_at) FROM email_events WHERE id > %s", (baseline,)
        ).fetchone()
        assert span is not None
        stored, first, last = int(span[0]), span[1], span[2]
        if not stored:
            raise BenchError(f"{name}: nothing was stored\n{output}\n{server.tail()}")
        seconds = max((last - first).total_seconds(), 1e-3)
        while True:
            left = conn.execute("SELECT count(*) FROM unsettled_events").fetchone()
            if left is not None and left[0] == 0:
                break
            if time.monotonic() > deadline + 120:
                raise BenchError(f"{name}: events still unsettled after the load\n{server.tail()}")
            time.sleep(0.05)
        settle_lag = (datetime.now(UTC) - last).total_seconds()
        after = counts(conn, campaign)
    problems = []
    for level in ("campaign", "rows"):
        for kind in COUNTERS:
            gained = after[level][kind] - before[level][kind]  # type: ignore[index]
            want = len(truth.distinct[kind])
            if gained != want:
                problems.append(f"{level}.{kind}: +{gained}, expected +{want}")
    for kind in COUNTERS:
        gained = after["raw"][kind] - before["raw"][kind]  # type: ignore[index]
        if gained != truth.raw[kind]:
            problems.append(f"raw emails.{kind}: +{gained}, expected +{truth.raw[kind]}")
    if stored != truth.valid:
        problems.append(f"stored {stored} events, expected {truth.valid}")
    return Phase(name, len(lines), stored, stored / seconds, settle_lag, not problems, "; ".join(problems))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each phase (a fresh campaign each)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if WRK is None:
        raise SystemExit(NO_WRK)
    rng = random.Random(7)
    results: list[Phase] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailroom-events-")))
        url = stack.enter_context(fresh_database(tmp))
        key = secrets.token_urlsafe(32)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
        env.update(
            MAILROOM_DATABASE_URL=url,
            MAILROOM_DATA_DIR=str(tmp / "data"),
            MAILROOM_TRANSPORT="outbox",
            MAILROOM_SECRET_KEY=key,
            MAILROOM_MAILGUN_WEBHOOK_SIGNING_KEY=SIGNING_KEY,
            MAILROOM_LOG_FORMAT="text",
        )
        server = Server(env, tmp)
        stack.callback(server.stop)
        server.wait_healthy()
        brand, user, _ = bootstrap(env)
        tokens = TrackingTokens(SecretBox(key))
        for run in range(1, args.repeat + 1):
            campaign = seed(url, brand, user, args.emails)
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                before = counts(conn, campaign)
            bodies, truth = webhook_bodies(campaign, args.emails, args.events, rng)
            print(f"  run {run}: posting {len(bodies):,} webhook calls", file=sys.stderr)
            results.append(run_phase("webhooks", server, url, campaign, bodies, truth, before, mode="post",
                                     path="/emails/events", tmp=tmp, connections=args.connections,
                                     timeout=args.timeout))  # fmt: skip
            campaign = seed(url, brand, user, args.emails)
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                before = counts(conn, campaign)
            paths, truth = tracking_paths(campaign, args.emails, args.hits, tokens, rng)
            print(f"  run {run}: {len(paths):,} tracking hits", file=sys.stderr)
            results.append(run_phase("tracking", server, url, campaign, paths, truth, before, mode="get", path="",
                                     tmp=tmp, connections=args.connections, timeout=args.timeout))  # fmt: skip
    report(results)


def report(results: list[Phase]) -> None:
    print(f"{'phase':<10} {'posted':>9} {'stored':>9} {'events/s':>9} {'settled after':>14}  counters")
    for r in results:
        verdict = "exact" if r.exact else f"WRONG: {r.detail}"
        print(f"{r.name:<10} {r.posted:>9,} {r.stored:>9,} {r.per_second:>9,.0f} {r.settle_lag:>12.1f} s  {verdict}")
    for name in ("webhooks", "tracking"):
        rates = [r.per_second for r in results if r.name == name]
        lags = [r.settle_lag for r in results if r.name == name]
        if rates:
            rate, lag = statistics.median(rates), statistics.median(lags)
            print(f"{name}: median {rate:,.0f} events/s accepted, median {lag:.1f} s to settled counters "
                  "(target >= 3,000/s, <= 5 s)")  # fmt: skip
    if not all(r.exact for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
