"""Serving an ASGI app (a local fake provider, or mailroom itself for a browser) on a free loopback port, in a
thread with its own loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute


@contextmanager
def serve_routes(routes: Sequence[BaseRoute], *, name: str) -> Iterator[str]:
    """The base URL (``http://127.0.0.1:<port>``) of the routes served for the duration of the block."""
    with serve_app(Starlette(routes=list(routes)), name=name, lifespan="off") as url:
        yield url


@contextmanager
def serve_app(app: Any, *, name: str, lifespan: Literal["on", "off"] = "on") -> Iterator[str]:
    """The base URL of an ASGI app served on a free loopback port for the duration of the block; with its
    lifespan on, what the app opened on the server's loop is closed there when the block ends."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} server did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
