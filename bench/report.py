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
sys.path.insert(0, str(ROOT))  # tests.support: the campaign seed
sys.path.insert(0, str(ROOT / "bench"))  # send.py: the database

from send import fresh_database  # noqa: E402

from mailroom.app import create_app, dispose  # noqa: E402
from mailroom.config import Settings  # noqa: E402
from mailroom.crm.service import bootstrap  # noqa: E402
from mailroom.db import libpq_url, make_engine, make_sessionmaker  # noqa: E402
from mailroom.migrate import migrate  # noqa: E402
from mailroom.web import sign_in  # noqa: E402
from mailroom.web.guard import SESSION_COOKIE  # noqa: E402
from tests.support.report_seed import seed_sent_campaign  # noqa: E402

BUDGET_MS = 200.0

CAMPAIGN = """
    INSERT INTO email_campaigns (created_by, brand, "from", subject, html, due_at, executed_at, individual)
    VALUES (%(user)s, %(brand)s, %(user)s, 'Spring listings are here', '<p>Hi</p>',
            now() - interval '6 days', now() - interval '6 days', true)
    RETURNING id, executed_at
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
        campaign, executed = conn.execute(CAMPAIGN, {"user": user.id, "brand": brand.id}).fetchone() or (None, None)
        seed_sent_campaign(conn, brand.id, campaign, executed, recipients)
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
                ("search by address", report, {"q": "77777@"}),
                ("search by name, page 2", report, {"q": "olivia", "page": 2}),
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
