"""The bounded rendering processes: same output as rendering in-process, and every bound enforced
without ever blocking the event loop that asked."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailroom.templating.render import TemplateError, compile_campaign
from mailroom.templating.renderer import CampaignTemplates, RendererUnavailable, RenderLimits, RenderPool
from tests.support.render import CONTEXT, render_children

T = TypeVar("T")

# Ten thousand squared iterations producing nothing: minutes of CPU, no output to cap.
SPIN = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
# One join of 10^10 characters: the allocation itself fails under the memory cap.
HOG = "{{ ([('a' * 100000)] * 100000)|join }}"


def environment_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far: utime + stime, fields 14 and 15 of /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def until_one_renders(before: dict[int, float], *, within: float = 30.0) -> None:
    """Wait until one of the processes of ``before`` (pid: its cpu_seconds then) has used a tenth of a
    second of CPU since: it is in the middle of a template. An idle child waits on its input and uses none."""
    deadline = time.monotonic() + within
    while not any(cpu_seconds(pid) - used >= 0.1 for pid, used in before.items()):
        assert time.monotonic() < deadline, "no rendering process started on the template"
        await asyncio.sleep(0.01)


async def while_ticking(work: Awaitable[T]) -> tuple[T | BaseException, int]:
    """Await ``work`` while counting 10 ms ticks of the same event loop: the loop must stay free."""
    task = asyncio.ensure_future(work)
    ticks = 0
    while not task.done():
        await asyncio.sleep(0.01)
        ticks += 1
    exc = task.exception()
    return (exc if exc is not None else task.result()), ticks


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    renderer = RenderPool(RenderLimits(processes=2, seconds=1.0, seconds_per_message=0.0, memory_mib=256))
    yield renderer
    await renderer.aclose()


def templates(
    subject: str = "Hi {{recipient.first_name}}", html: str | None = None, text: str | None = None
) -> CampaignTemplates:
    return CampaignTemplates(subject, html, text)


async def test_the_pool_renders_what_rendering_in_process_renders(pool: RenderPool) -> None:
    html = "<p>Dear {{ recipient.display_name or 'friend' }}, from {{ user.first_name }} <b>{{ '<&>' }}</b></p>"
    contexts: list[dict[str, Any]] = [
        CONTEXT,
        {**CONTEXT, "recipient": {"first_name": None, "display_name": None, "email": "x@example.com"}},
        {**CONTEXT, "recipient": {}},
    ]
    got = await pool.render(templates(html=html), contexts)
    expected = [compile_campaign("Hi {{recipient.first_name}}", html, None).render(c) for c in contexts]
    assert got == expected
    assert got[1].html == "<p>Dear friend, from Bob <b>&lt;&amp;&gt;</b></p>" and got[1].subject == "Hi "


async def test_a_template_that_runs_too_long_is_interrupted_naming_field_and_line(pool: RenderPool) -> None:
    outcome, ticks = await while_ticking(pool.render(templates(html="<p>\n" + SPIN), [CONTEXT]))
    # Minutes of work refused at its deadline, and the loop kept running all along.
    assert isinstance(outcome, TemplateError)
    assert str(outcome) == "html: line 2: the template took longer than 1 s to render"
    assert ticks > 10
    # The same processes go on rendering.
    (message,) = await pool.render(templates(), [CONTEXT])
    assert message.subject == "Hi Ann"


async def test_a_template_that_takes_too_much_memory_fails_and_its_process_is_replaced(pool: RenderPool) -> None:
    others = render_children()
    await pool.render(templates(), [CONTEXT])
    (first,) = render_children() - others
    with pytest.raises(TemplateError) as info:
        await pool.render(templates(text="ok\n" + HOG), [CONTEXT])
    assert str(info.value) == "text: line 2: the template used more than 256 MiB of memory"
    (message,) = await pool.render(templates(), [CONTEXT])
    assert message.subject == "Hi Ann"
    # A process that ran out of memory is not trusted with another template.
    assert first not in render_children()


async def test_a_process_that_dies_mid_render_is_replaced() -> None:
    slow = RenderPool(RenderLimits(processes=1, seconds=60.0))
    try:
        others = render_children()
        await slow.render(templates(), [CONTEXT])  # started, so its pid can be found
        (pid,) = render_children() - others
        before = {pid: cpu_seconds(pid)}
        task = asyncio.ensure_future(slow.render(templates(html=SPIN), [CONTEXT]))
        await until_one_renders(before)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(TemplateError, match="MiB of memory"):
            await asyncio.wait_for(task, 30)
        (message,) = await slow.render(templates(), [CONTEXT])
        assert message.subject == "Hi Ann"
        assert pid not in render_children()
    finally:
        await slow.aclose()


async def test_a_chunk_shares_one_deadline_scaled_by_its_size() -> None:
    limits = RenderLimits(processes=1, seconds=2.0, seconds_per_message=0.05)
    assert (limits.budget(1), limits.budget(100), limits.budget(1000)) == (2.05, 7.0, 52.0)
    pool = RenderPool(limits)
    try:
        contexts = [{**CONTEXT, "recipient": {"first_name": f"R{i}"}} for i in range(1000)]
        messages = await pool.render(templates(html="<p>{{ recipient.first_name }}</p>"), contexts)
        assert [m.subject for m in messages] == [f"Hi R{i}" for i in range(1000)]
        assert messages[999].html == "<p>R999</p>" and messages[999].text == "R999"
    finally:
        await pool.aclose()


async def test_check_renders_a_sample_and_reports_what_the_campaign_needs(pool: RenderPool) -> None:
    checked = await pool.check("html", "<p>Hi {{ recipient.first_name }}</p><p>{{ sender.display_name }}</p>")
    assert checked.personal and checked.text is None
    derived = await pool.check("html", "<p>From {{ sender.display_name }}</p><br>&amp;", derive_text=True)
    assert not derived.personal and derived.text == "From {{ sender.display_name }}\n\n&"
    with pytest.raises(TemplateError) as info:
        await pool.check("subject", "{{ 1 / 0 }}")
    assert str(info.value) == "subject: line 1: division by zero"
    with pytest.raises(TemplateError, match=r"^html: the text made from it does not render: text: "):
        await pool.check("html", "<script>{% if recipient.first_name %}</script>{% endif %}", derive_text=True)


async def test_closing_the_pool_stops_its_processes() -> None:
    others = render_children()
    pool = RenderPool(RenderLimits(processes=2, seconds=30.0))
    await asyncio.gather(pool.render(templates(), [CONTEXT]), pool.render(templates(), [CONTEXT]))
    mine = render_children() - others
    assert len(mine) == 2
    before = {pid: cpu_seconds(pid) for pid in mine}
    busy = asyncio.ensure_future(pool.render(templates(html=SPIN), [CONTEXT]))
    await until_one_renders(before)  # one idle, one busy
    await pool.aclose()
    with pytest.raises(RendererUnavailable):
        await busy
    assert not mine & render_children()
    with pytest.raises(RendererUnavailable):
        await pool.render(templates(), [CONTEXT])


async def test_rendering_processes_do_not_see_the_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILROOM_SECRET_KEY", "not-for-templates")
    others = render_children()
    pool = RenderPool(RenderLimits(processes=1))
    try:
        await pool.render(templates(), [CONTEXT])
        (pid,) = render_children() - others
        environ = environment_of(pid)
        assert environ and not [v for v in environ if v.startswith(b"MAILROOM_")]
    finally:
        await pool.aclose()
