"""Memory of sending a chunk of messages that carry a large attachment.

    .venv/bin/python bench/attachments.py [--size-mb 10] [--recipients 10 100]

Builds one chunk of per-recipient messages the way the sender does (the attachment's MIME part
encoded once, each message its own head and text plus a reference to that part) and sends it
through the SMTP transport to a discarding SMTP server on loopback. Prints the peaks of traced
memory (tracemalloc) while encoding the part and while building and sending the chunk: both
should stay near a small multiple of the attachment whatever the number of recipients. For
comparison it prints the same chunk held as one bytes object per message, which is what copying
the attachment into every message costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: the discarding SMTP server

from mailroom.transports.base import OutgoingMessage  # noqa: E402
from mailroom.transports.mime import Attachment, build_segments, encode_part  # noqa: E402
from mailroom.transports.smtp import SmtpTransport  # noqa: E402
from tests.support.smtp_sink import smtp_sink  # noqa: E402

HTML = "<p>" + "Three new homes near you, open this weekend. " * 40 + "</p>"


def chunk(part: bytes, recipients: int, *, joined: bool) -> list[OutgoingMessage]:
    messages = []
    for n in range(recipients):
        address = f"buyer{n}@example.com"
        segments = build_segments(
            from_addr="Bob Ray <bob@example.com>",
            to=[address],
            cc=[],
            subject=f"Brochure for buyer {n}",
            text="Three new homes near you.",
            html=HTML,
            message_id=f"<row-{n}@mail.example.com>",
            date=time.time(),
            headers={"Feedback-ID": "rechat:b:rechat"},
            inline=[],
            attachments=[part],
        )
        body: bytes | tuple[bytes, ...] = b"".join(segments) if joined else segments
        messages.append(OutgoingMessage(f"row-{n}", "bob@example.com", [address], body))
    return messages


async def measure(url: str, data: bytes, recipients: int, *, joined: bool) -> tuple[float, float, float]:
    """(peak traced MB encoding the part, then building and sending the chunk; seconds sending)."""
    transport = SmtpTransport(url)
    tracemalloc.start()
    try:
        part = encode_part(Attachment("brochure.pdf", "application/pdf", data), inline=False)
        _, encoding = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        started = time.perf_counter()
        results = await transport.send_many(chunk(part, recipients, joined=joined))
        del part
        _, sending = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    await transport.aclose()
    if not all(r.accepted for r in results):
        raise SystemExit(f"the sink refused messages: {[r.error for r in results if not r.accepted][:3]}")
    return encoding / 2**20, sending / 2**20, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=10.0)
    parser.add_argument("--recipients", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args()
    data = os.urandom(int(args.size_mb * 2**20))
    encoded_mb = len(encode_part(Attachment("x.pdf", "application/pdf", data), inline=False)) / 2**20
    print(f"attachment {len(data) / 2**20:.1f} MB, {encoded_mb:.1f} MB as its base64 MIME part")
    with smtp_sink() as sink:
        for joined in (False, True):
            how = "one bytes per message (copies)" if joined else "shared encoded part (segments)"
            for recipients in args.recipients:
                encoding, sending, seconds = asyncio.run(measure(sink.url, data, recipients, joined=joined))
                print(
                    f"{how:32} {recipients:4d} recipients: peak traced {encoding:6.1f} MB encoding the part, "
                    f"{sending:7.1f} MB building and sending ({sending / encoded_mb:5.1f} x the part), {seconds:5.2f} s"
                )
        print(f"sink received {sink.messages} messages, {sink.bytes / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
