"""Campaign report benchmark: the report page and its recipient table pages for a campaign of N recipients.

    .venv/bin/python bench/report.py [--recipients 100000] [--repeat 7]

Creates a fresh database (as bench/send.py makes it: its own `mailroom_bench_*` database on
MAILROOM_BENCH_DATABASE_URL, else an embedded PostgreSQL), a sent campaign of N recipients with their
emails and events written by set-based SQL (generate_series): deliveries, opens and clicks over five
days (most in the first hours), clicks on five links, failures with a few reasons over a few domains.
Then, in-process through the ASGI app with a signed-in session, times the report page and a few pages
of its recipient table (first, deep, searched, sorted) and prints the median milliseconds of each, and
the time the full CSV export takes. The database is dropped however the bench ends. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: the contact seed
sys.path.insert(0, str(ROOT / "bench"))  # send.py: the database

from send import fresh_database  # noqa: E402

from mailroom.app import create_app, dispose  # noqa: E402
from mailroom.config import Settings  # noqa: E402
from mailroom.crm.service import bootstrap  # noqa: E402
from mailroom.db import libpq_url, make_engine, make_sessionmaker  # noqa: E402
from mailroom.migrate import migrate  # noqa: E402
from mailroom.web import sign_in  # noqa: E402
from mailroom.web.guard import SESSION_COOKIE  # noqa: E402
from tests.support.workers import SEED_CONTACTS  # noqa: E402

DOMAIN = "bench.example"
BUDGET_MS = 200.0

CAMPAIGN = """
    INSERT INTO email_campaigns (created_by, brand, "from", subject, html, due_at, executed_at, individual)
    VALUES (%(user)s, %(brand)s, %(user)s, 'Spring listings are here', '<p>Hi</p>',
            now() - interval '6 days', now() - interval '6 days', true)
    RETURNING id
"""
# One email and one recipient row per contact; ids derived from the position so the two can be joined.
EMAILS = """
    INSERT INTO emails (id, "from", "to", subject, campaign, sent_at, created_at)
    SELECT md5(%(campaign)s::text || g)::uuid, 'ann@bench.example', ARRAY['r' || g || '@' || %(domain)s],
           'Spring listings are here', %(campaign)s, now() - interval '6 days', now() - interval '6 days'
    FROM generate_series(1, %(n)s) g
"""
# Every 40th address is at one of three other domains, so failures spread over a few.
RECIPIENT_ROWS = """
    INSERT INTO email_campaign_emails (id, campaign, seq, email, email_address, send_type, contact, accepted)
    SELECT md5('row' || %(campaign)s::text || g)::uuid, %(campaign)s, g, md5(%(campaign)s::text || g)::uuid,
           c.emails[1], 'To', c.id, 1
    FROM generate_series(1, %(n)s) g JOIN contacts c ON c.emails[1] = 'r' || g || '@' || %(domain)s
"""
# Who did what, by position: 3% failed, the rest delivered; 40% opened (some twice), 10% clicked.
EVENTS = """
    INSERT INTO email_events (type, severity, source, brand, campaign, email, campaign_email, recipient, url,
                              reason, occurred_at)
    SELECT e.type, e.severity, 'mailgun', %(brand)s, %(campaign)s, md5(%(campaign)s::text || g)::uuid,
           md5('row' || %(campaign)s::text || g)::uuid, 'r' || g || '@' || %(domain)s, e.url, e.reason,
           now() - interval '6 days' + e.after
    FROM generate_series(1, %(n)s) g, LATERAL (
        SELECT 'failed' AS type, CASE WHEN g %% 2 = 0 THEN 'permanent' ELSE 'temporary' END AS severity,
               NULL AS url, (ARRAY['5.1.1 No such user', '4.2.2 Mailbox full', '5.7.1 Blocked'])[1 + g %% 3] AS reason,
               interval '2 minutes' AS after
        WHERE g %% 33 = 0
        UNION ALL SELECT 'delivered', NULL, NULL, NULL, interval '1 minute' WHERE g %% 33 <> 0
        UNION ALL SELECT 'opened', NULL, NULL, NULL, make_interval(secs => 60 + (g::bigint * 7919 %% 1000) ^ 2 / 2.3)
        WHERE g %% 33 <> 0 AND g %% 5 < 2
        UNION ALL SELECT 'opened', NULL, NULL, NULL,
               make_interval(secs => 3600 + (g::bigint * 104729 %% 1000) ^ 2 / 2.5)
        WHERE g %% 33 <> 0 AND g %% 10 = 0
        UNION ALL SELECT 'clicked', NULL, 'https://bench.example/listing/' || (g %% 5), NULL,
               make_interval(secs => 120 + (g::bigint * 7919 %% 1000) ^ 2 / 2.3)
        WHERE g %% 33 <> 0 AND g %% 10 = 0
    ) e
"""
# The counters the settler would have moved: per message (raw), per recipient (0 or 1), per campaign.
COUNTERS = """
    WITH per AS (
        SELECT email, campaign_email, count(*) FILTER (WHERE type = 'delivered') AS delivered,
               count(*) FILTER (WHERE type = 'failed') AS failed, count(*) FILTER (WHERE type = 'opened') AS opened,
               count(*) FILTER (WHERE type = 'clicked') AS clicked
        FROM email_events WHERE campaign = %(campaign)s GROUP BY email, campaign_email
    ), emails AS (
        UPDATE emails m SET delivered = per.delivered, failed = per.failed, opened = per.opened,
               clicked = per.clicked, accepted = 1
        FROM per WHERE m.id = per.email
    )
    UPDATE email_campaign_emails ce SET delivered = least(per.delivered, 1), failed = least(per.failed, 1),
           opened = least(per.opened, 1), clicked = least(per.clicked, 1)
    FROM per WHERE ce.id = per.campaign_email
"""
CAMPAIGN_COUNTERS = """
    UPDATE email_campaigns c SET recipients_count = s.n, sent = s.n, accepted = s.n, delivered = s.delivered,
           failed = s.failed, opened = s.opened, clicked = s.clicked
    FROM (SELECT count(*) AS n, sum(delivered) AS delivered, sum(failed) AS failed, sum(opened) AS opened,
                 sum(clicked) AS clicked FROM email_campaign_emails WHERE campaign = %(campaign)s) s
    WHERE c.id = %(campaign)s
"""


async def seed(url: str, recipients: int) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """The brand, its Admin and their sent campaign."""
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            brand, user, _ = await bootstrap(
                session, brand_name="Bench Realty", email="ann@bench.example", first_name="Ann", last_name="Agent"
            )
    finally:
        await engine.dispose()
    started = time.perf_counter()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for first in range(1, recipients + 1, 100_000):
            last = min(first + 99_999, recipients)
            conn.execute(SEED_CONTACTS, {"brand": brand.id, "domain": DOMAIN, "first": first, "last": last})
        (campaign,) = conn.execute(CAMPAIGN, {"user": user.id, "brand": brand.id}).fetchone() or ()
        params = {"campaign": campaign, "brand": brand.id, "domain": DOMAIN, "n": recipients}
        for statement in (EMAILS, RECIPIENT_ROWS, EVENTS, COUNTERS, CAMPAIGN_COUNTERS):
            conn.execute(statement, params)
        events = conn.execute("SELECT count(*) FROM email_events").fetchone()
        conn.execute("VACUUM ANALYZE")
    seconds = time.perf_counter() - started
    print(f"  {recipients:,} recipients and {events[0] if events else 0:,} events in {seconds:.1f} s", file=sys.stderr)
    return brand.id, user.id, campaign


async def timed(client: httpx.AsyncClient, path: str, params: dict[str, str | int], repeat: int) -> list[float]:
    """Milliseconds of each of ``repeat`` requests, after one not counted (it warms the pools and caches)."""
    times = []
    for n in range(repeat + 1):
        started = time.perf_counter()
        response = await client.get(path, params=params)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{path} {params} answered {response.status_code}: {response.text[:500]}")
        if n:
            times.append(elapsed)
    return times


async def measure(url: str, tmp: Path, recipients: int, repeat: int) -> bool:
    brand, user, campaign = await seed(url, recipients)
    settings = Settings(
        database_url=url, data_dir=tmp / "data", secret_key=secrets.token_urlsafe(32), public_url="http://bench.example"
    )
    app = create_app(settings)
    try:
        async with app.state.sessionmaker() as session, session.begin():
            session_id = await sign_in.start_session(session, user)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench.example", cookies={SESSION_COOKIE: session_id}, timeout=120
        ) as client:
            report = f"/app/brands/{brand}/campaigns/{campaign}"
            pages: list[tuple[str, str, dict[str, str | int]]] = [
                ("report, first table page (clicked first)", report, {}),
                ("table page 2", report, {"page": 2}),
                ("table page 1000 (deep)", report, {"page": 1000}),
                ("table page 1500 by name", report, {"sort": "full_name", "page": 1500}),
                ("table page 300, opened first", report, {"sort": "-opened", "page": 300}),
                ("search by address", report, {"q": "r77777@"}),
                ("search by name, page 2", report, {"q": "first7", "page": 2}),
            ]
            ok = True
            print(f"campaign report, {recipients:,} recipients, median of {repeat} (ms, in-process ASGI):")
            for name, path, params in pages:
                median = statistics.median(await timed(client, path, params, repeat))
                ok = ok and median < BUDGET_MS
                print(f"  {name:<44} {median:7.1f}{'' if median < BUDGET_MS else '  over budget'}")
            started = time.perf_counter()
            lines = 0
            async with client.stream("GET", f"{report}/recipients.csv") as response:
                async for chunk in response.aiter_text():
                    lines += chunk.count("\n")
            export = f"CSV export ({lines - 1:,} rows, streamed)"
            print(f"  {export:<44} {(time.perf_counter() - started) * 1000:7.1f}")
    finally:
        await dispose(app)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailroom-bench-report-") as tmp, fresh_database(Path(tmp)) as url:
        migrate(url)
        ok = asyncio.run(measure(url, Path(tmp), args.recipients, args.repeat))
    print(f"every page under {BUDGET_MS:.0f} ms: {'yes' if ok else 'no'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
