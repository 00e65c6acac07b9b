"""Opens and clicks over time, as the report shows them: hourly for two days after sending, then daily,
drawn as an SVG bar chart on the server (no script) beside a table of the same numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Hours shown one by one; after them, days.
HOURLY_SPAN = 48
WIDTH, HEIGHT = 800, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 34
# Room for an x-axis label such as 'day 12' at the chart's size, in its own units.
MIN_TICK_GAP = 48


@dataclass(frozen=True, slots=True)
class Bucket:
    label: str
    start: datetime
    opened: int
    clicked: int


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    # (y, label) of each horizontal grid line, and (x, label) of each x-axis label.
    grid: list[tuple[float, str]]
    ticks: list[tuple[float, str]]
    baseline: float
    left: int
    right: float


def buckets(hourly: Sequence[Any], executed_at: datetime | None) -> list[Bucket]:
    """The stats' hours (``GET /emails/:id/stats`` ``hourly``) as the report's buckets: each of the first
    two days' hours, empty ones too, up to the last with a hit; then each day up to the last with one."""
    if not hourly or executed_at is None:
        return []
    first_hour = executed_at.replace(minute=0, second=0, microsecond=0)
    by_hour: dict[int, tuple[int, int]] = {}
    by_day: dict[int, tuple[int, int]] = {}
    for h in hourly:
        since = max(0, int(h["since_sending"]))
        into = by_hour if since < HOURLY_SPAN else by_day
        key = since if since < HOURLY_SPAN else since // 24
        opened, clicked = into.get(key, (0, 0))
        into[key] = (opened + h["opened"], clicked + h["clicked"])
    out = []
    last_hour = max(by_hour) if not by_day else HOURLY_SPAN - 1
    for since in range(last_hour + 1) if by_hour or by_day else ():
        opened, clicked = by_hour.get(since, (0, 0))
        out.append(Bucket(f"+{since}h", first_hour + timedelta(hours=since), opened, clicked))
    for day in range(HOURLY_SPAN // 24, max(by_day) + 1) if by_day else ():
        opened, clicked = by_day.get(day, (0, 0))
        out.append(Bucket(f"day {day + 1}", first_hour + timedelta(days=day), opened, clicked))
    return out


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... at or above ``value``: the grid's top."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def chart(series: list[Bucket]) -> Chart | None:
    """Two bars per bucket, opens then clicks, on a grid of four lines; None when there is nothing to draw."""
    if not series:
        return None
    top = _nice_ceiling(max(max(b.opened, b.clicked) for b in series) or 1)
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    slot = plot_width / len(series)
    bar = max(1.0, slot * 0.4)
    baseline = TOP + plot_height
    bars = []
    for n, b in enumerate(series):
        x = LEFT + n * slot + (slot - 2 * bar) / 2
        for offset, kind, value in ((0.0, "opened", b.opened), (bar, "clicked", b.clicked)):
            height = plot_height * value / top
            title = f"{b.label}: {value} {'open' if kind == 'opened' else 'click'}{'' if value == 1 else 's'}"
            bars.append(
                Bar(round(x + offset, 2), round(baseline - height, 2), round(bar, 2), round(height, 2), kind, title)
            )
    grid = [(round(baseline - plot_height * k / 4, 2), f"{top * k / 4:g}") for k in range(5)]
    # A label every twelfth hour (every sixth when the hours are all there is) and on each day, leaving
    # out any that would touch the one before it.
    hours_apart = 6 if len(series) <= 24 else 12
    ticks: list[tuple[float, str]] = []
    for n, b in enumerate(series):
        x = round(LEFT + n * slot + slot / 2, 2)
        wanted = not b.label.endswith("h") or int(b.label[1:-1]) % hours_apart == 0
        if wanted and (not ticks or x - ticks[-1][0] >= MIN_TICK_GAP):
            ticks.append((x, b.label))
    return Chart(WIDTH, HEIGHT, bars, grid, ticks, baseline, LEFT, WIDTH - RIGHT)
