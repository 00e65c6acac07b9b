"""Message-building benchmark: microseconds per ``build_message`` call.

    .venv/bin/python bench/mime.py [--runs 5000] [--repeat 5]

One message as the sender builds it: ~2 KB of html and its text version, a Feedback-ID and a
List-Unsubscribe header, no attachments. Prints the median of ``--repeat`` timings of ``--runs``
builds each.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime

from mailroom.transports.mime import build_message, make_message_id

PARAGRAPH = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do.</p>\n"
HTML = "<html><body>" + PARAGRAPH * 28 + "</body></html>"
TEXT = "Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do.\n" * 16
HEADERS = {"Feedback-ID": "rechat:b:rechat", "List-Unsubscribe": "<https://example.com/u/123>"}


def build() -> bytes:
    return build_message(
        from_addr="Bob Ray <bob@example.com>",
        to=["Ann Lee <ann@example.com>"],
        cc=[],
        subject="Monthly news",
        text=TEXT,
        html=HTML,
        message_id=make_message_id(uuid.uuid4(), "mail.example.com"),
        date=datetime.now(UTC),
        headers=HEADERS,
        inline=[],
        attachments=[],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    timings = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        for _ in range(args.runs):
            build()
        timings.append((time.perf_counter() - start) / args.runs * 1e6)
    print(f"build_message: {statistics.median(timings):.1f} µs per message (2 KB html + text, median of {args.repeat})")


if __name__ == "__main__":
    main()
