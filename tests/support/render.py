"""Template contexts, the hostile html the rendering and tracking tests and bench/render.py share, and
this process's rendering children as /proc shows them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CONTEXT: dict[str, Any] = {
    "recipient": {"first_name": "Ann", "last_name": "Lee", "display_name": "Ann Lee", "email": "ann@example.com"},
    "sender": {"first_name": "Bob", "last_name": "Ray", "display_name": "Bob Ray", "email": "bob@example.com"},
    "email": {"url": "https://mail.example.com/e/1"},
}


# Each of these made the old scans quadratic: one regex or html.parser pass from every `{` or `<`.
HOSTILE_HTML = {
    "unclosed braces": "{" * 2_000_000,
    "braces in a raw block": "{% raw %}" + "{" * 1_000_000 + "{% endraw %}",
    "unclosed tags": "<p>" + "<a " * 600_000,
    "unclosed attribute quotes": "<a b='" * 300_000,
    "unfinished attributes": "<a b=" * 400_000,
    "unclosed comments": "<!--" * 500_000,
    "unclosed declarations": "<!" * 1_000_000,
}


_TWO_MB = 2 * 1024 * 1024
# Each of these makes a backtracking pattern, or a scan that starts again after every tag, quadratic
# in the link rewriter (src/mailroom/tracking_links.py).
HOSTILE_TRACKED_HTML = {
    "tags never closed": "<a " * (_TWO_MB // 3),
    "quotes never closed": '<a x="' * (_TWO_MB // 6) + "'",
    "one tag of attributes": "<a " + "h=x " * (_TWO_MB // 4) + ">",
    "brackets": "<" * _TWO_MB,
    "links": '<a href="https://x.example.com/p">x</a>' * (_TWO_MB // 40),
    "body ends": "</body" * (_TWO_MB // 6),
}


def _render_children() -> dict[int, str]:
    """This process's rendering children and their state letter (R running, S waiting, Z exited), from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"render_child" in cmdline:
            found[int(stat.parent.name)] = fields[0]
    return found


def render_children() -> set[int]:
    """Pids of this process's rendering children."""
    return set(_render_children())


def running_render_children() -> set[int]:
    """Those of this process's rendering children that are running: an idle one waits on its input."""
    return {pid for pid, state in _render_children().items() if state == "R"}
