"""Rendering benchmark: microseconds per message in-process vs through the bounded renderer pool.

    .venv/bin/python bench/render.py [--messages 20000] [--repeat 5]

The campaign of bench/send.py (a personalised subject, ~2 KB of html with a few variables, text
derived from it), rendered for ``--messages`` recipients: once by calling the compiled templates
in this process (what the sender did before rendering moved to child processes), then through
``RenderPool`` in chunks of 100 (the SMTP chunk) and 1,000 (the Mailgun chunk), one chunk at a time
and two at once (two send jobs sharing the pool). Prints the median of ``--repeat`` runs: wall
time per message, and this process's CPU time per message (what rendering costs the event loop).

Then the two scans of a user's html on hostile input, each of which once went quadratic (the
tests check what they make of it, this prints how long it takes): ``html_to_text`` on
``HOSTILE_HTML`` and the link rewriter on ``HOSTILE_TRACKED_HTML`` (tests/support/render.py),
milliseconds and MB/s per input, median of ``--repeat``. Linear scans go through megabytes a second.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # tests.support: the hostile inputs the tests use

from send import HTML, SUBJECT  # noqa: E402

from mailroom.crypto import SecretBox  # noqa: E402
from mailroom.templating.render import compile_campaign, html_to_text  # noqa: E402
from mailroom.templating.renderer import CampaignTemplates, RenderLimits, RenderPool  # noqa: E402
from mailroom.tracking_links import LinkRewriter, TrackingTokens  # noqa: E402
from tests.support.keys import TEST_SECRET_KEY  # noqa: E402
from tests.support.render import HOSTILE_HTML, HOSTILE_TRACKED_HTML  # noqa: E402


def contexts(count: int) -> list[dict[str, Any]]:
    sender = {"first_name": "Ann", "last_name": "Agent", "display_name": "Ann Agent", "email": "ann@bench.example"}
    return [
        {
            "recipient": {
                "first_name": f"First{i}",
                "last_name": f"Last{i}",
                "display_name": f"First{i} Last{i}",
                "email": f"r{i}@bench.example",
            },
            "sender": sender,
            "email": {"url": ""},
        }
        for i in range(count)
    ]


def timed(run: Callable[[], None], messages: int) -> tuple[float, float]:
    """(wall µs, this process's CPU µs) per message."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return (time.perf_counter() - wall) / messages * 1e6, (time.process_time() - cpu) / messages * 1e6


def in_process(every: list[dict[str, Any]]) -> Callable[[], None]:
    compiled = compile_campaign(SUBJECT, HTML, None)

    def run() -> None:
        for context in every:
            compiled.render(context)

    return run


def through_pool(
    loop: asyncio.AbstractEventLoop, pool: RenderPool, every: list[dict[str, Any]], chunk: int, parallel: int
) -> Callable[[], None]:
    templates = CampaignTemplates(SUBJECT, HTML, None)
    chunks = [every[i : i + chunk] for i in range(0, len(every), chunk)]

    async def worker(mine: list[list[dict[str, Any]]]) -> None:
        for part in mine:
            rendered = await pool.render(templates, part)
            assert len(rendered) == len(part)

    async def together() -> None:
        await asyncio.gather(*(worker(chunks[n::parallel]) for n in range(parallel)))

    def run() -> None:
        loop.run_until_complete(together())

    return run


def hostile(repeat: int) -> None:
    """Milliseconds and MB/s of each scan of a user's html on each of its hostile inputs."""
    rewriter = LinkRewriter(TrackingTokens(SecretBox(TEST_SECRET_KEY)), "http://mailroom.test")
    scans: list[tuple[str, dict[str, str], Callable[[str], object]]] = [
        ("html_to_text", HOSTILE_HTML, html_to_text),
        ("link rewriter", HOSTILE_TRACKED_HTML, lambda html: rewriter.rewrite(html, uuid.uuid4())),
    ]
    print(f"\nhostile html, median of {repeat} runs")
    print(f"{'':14} {'input':28} {'MB':>6} {'ms':>9} {'MB/s':>8}")
    for scan, inputs, run in scans:
        for name, html in inputs.items():
            seconds = []
            for _ in range(repeat):
                started = time.perf_counter()
                run(html)
                seconds.append(time.perf_counter() - started)
            taken = statistics.median(seconds)
            size = len(html) / 1e6
            print(f"{scan:14} {name:28} {size:>6.1f} {taken * 1e3:>9.1f} {size / taken:>8.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    every = contexts(args.messages)
    loop = asyncio.new_event_loop()
    pool = RenderPool(RenderLimits())
    cases: dict[str, Callable[[], None]] = {
        "in-process": in_process(every),
        "pool, chunks of 100": through_pool(loop, pool, every, 100, 1),
        "pool, chunks of 100, 2 at once": through_pool(loop, pool, every, 100, 2),
        "pool, chunks of 1000": through_pool(loop, pool, every, 1000, 1),
        "pool, chunks of 1000, 2 at once": through_pool(loop, pool, every, 1000, 2),
    }
    try:
        # Warm up: both children started and holding the compiled campaign.
        through_pool(loop, pool, every[:200], 100, 2)()
        results = {name: [timed(run, args.messages) for _ in range(args.repeat)] for name, run in cases.items()}
    finally:
        loop.run_until_complete(pool.aclose())
        loop.close()
    print(
        f"\nmailroom render benchmark: {args.messages:,} messages (subject, ~{len(HTML):,} B html, derived text), "
        f"median of {args.repeat} runs"
    )
    print(f"{'':34} {'wall µs/msg':>12} {'loop CPU µs/msg':>16}")
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"{name:34} {wall:>12.1f} {cpu:>16.1f}")
    hostile(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
