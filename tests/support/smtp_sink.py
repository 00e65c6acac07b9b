"""An SMTP server on loopback that accepts everything and keeps nothing but counts.

For measuring the sender (memory, speed) without the receiving side's own costs: aiosmtpd reads
DATA line by line and keeps each message whole, which would dominate both figures. This reads the
body in 64 KB pieces and forgets them. It offers PIPELINING and 8BITMIME, never STARTTLS or AUTH.

    with smtp_sink() as sink:
        transport = SmtpTransport(sink.url)
        ...
        assert sink.messages == 100
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_END = b"\r\n.\r\n"


@dataclass
class Sink:
    port: int = 0
    messages: int = 0
    bytes: int = 0

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?helo=client.test"


async def _read_body(reader: asyncio.StreamReader) -> int | None:
    """Bytes of one message up to its terminating dot line; None when the client went away."""
    size = 0
    tail = b"\r\n"  # the body starts at the beginning of a line
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return None
        window = tail + chunk
        end = window.find(_END)
        if end >= 0:
            # A client waits for the reply before its next command, so nothing follows in this read.
            return size + end + 2 - len(tail)
        size += len(chunk)
        tail = window[-4:]


async def _session(sink: Sink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 sink ready\r\n")
    try:
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                size = await _read_body(reader)
                if size is None:
                    break
                sink.messages += 1
                sink.bytes += size
                writer.write(b"250 ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                writer.write(b"250 ok\r\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextmanager
def smtp_sink() -> Iterator[Sink]:
    sink = Sink()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: list[asyncio.Server] = []

    async def start() -> None:
        server.append(await asyncio.start_server(lambda r, w: _session(sink, r, w), "127.0.0.1", 0))
        sink.port = server[0].sockets[0].getsockname()[1]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(5)
    started.wait(5)
    try:
        yield sink
    finally:

        async def stop() -> None:
            server[0].close()
            await server[0].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
