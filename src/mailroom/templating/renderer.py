"""Rendering user templates in a small pool of bounded child processes, off the event loop.

A template can loop, pad or replace its way to minutes of CPU or gigabytes of memory, and Jinja's
parser can recurse without end on deeply nested input. None of that may run where HTTP is answered
or where the sender's jobs heartbeat, so every compile, check and render of user input goes to a
child (``templating/render_child.py``): a fresh interpreter whose address space is capped, which
interrupts a template that runs past its time (naming field and line), and which the parent kills
and replaces when it does not answer within its deadline or dies. A whole chunk of recipients
travels in one round-trip, so the cost per message is a few microseconds of serialisation.

Children are started with asyncio's subprocess support rather than multiprocessing: waiting on
their pipes is just awaiting a stream (no thread per wait), and answers are length-prefixed JSON,
never pickle, so a child that ran user templates cannot hand the parent objects to unpickle.

The pool is built where the process's clients are built (``create_app``, ``run_worker``), starts
its children on first use, in the event loop that uses it, and ``aclose()`` stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mailroom.config import Settings
from mailroom.templating.render import RenderedMessage, TemplateError

# A child that is not ready this long after it was started is broken, not busy.
STARTUP_SECONDS = 30.0
# The child interrupts a template itself at its deadline; the parent gives it this much more to
# answer before killing it.
GRACE_SECONDS = 1.0


class RendererUnavailable(OSError):
    """A rendering process could not be started or stopped answering for a reason not its template's."""


@dataclass(frozen=True)
class RenderLimits:
    processes: int = 2
    seconds: float = 2.0
    seconds_per_message: float = 0.05
    memory_mib: int = 512

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderLimits:
        return cls(
            processes=max(1, settings.render_processes),
            seconds=settings.render_seconds,
            seconds_per_message=settings.render_seconds_per_message,
            memory_mib=settings.render_memory_mib,
        )

    def budget(self, messages: int) -> float:
        """Wall-clock seconds a request rendering ``messages`` messages may take."""
        return round(self.seconds + self.seconds_per_message * messages, 3)


@dataclass(frozen=True)
class CampaignTemplates:
    """A campaign's template sources; compiled (and cached) in the child that renders them."""

    subject: str
    html: str | None
    text: str | None


@dataclass(frozen=True)
class CheckedField:
    personal: bool  # the template reads `recipient`
    text: str | None  # the text template made from html, when asked for


class _Died(Exception):
    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode


class _Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, memory_mib: int) -> _Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailroom.templating.render_child",
            str(memory_mib),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Templates need none of the service's settings (database URL, secret key, API keys).
            env={name: value for name, value in os.environ.items() if not name.startswith("MAILROOM_")},
        )
        child = cls(process)
        try:
            ready = await asyncio.wait_for(child._receive(), STARTUP_SECONDS)
        except (TimeoutError, _Died) as exc:
            await child.stop(kill=True)
            raise RendererUnavailable("a rendering process did not start") from exc
        if not ready.get("ready"):
            await child.stop(kill=True)
            raise RendererUnavailable("a rendering process did not start")
        return child

    async def _receive(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            size = int.from_bytes(await stdout.readexactly(4), "big")
            answer: dict[str, Any] = orjson.loads(await stdout.readexactly(size))
            return answer
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _Died(await self.process.wait()) from None

    async def exchange(self, request: Mapping[str, Any], seconds: float) -> dict[str, Any]:
        payload = orjson.dumps(request)
        stdin = self.process.stdin
        assert stdin is not None

        async def round_trip() -> dict[str, Any]:
            try:
                # One write: each write to the pipe wakes the child, and a wake-up costs more than the copy.
                stdin.write(len(payload).to_bytes(4, "big") + payload)
                await stdin.drain()
            except ConnectionError:
                raise _Died(await self.process.wait()) from None
            return await self._receive()

        return await asyncio.wait_for(round_trip(), seconds)

    async def stop(self, *, kill: bool = False) -> None:
        if self.process.returncode is None:
            if kill:
                self.process.kill()
            elif self.process.stdin is not None:
                self.process.stdin.close()  # the child exits at the end of its input
        try:
            await asyncio.wait_for(self.process.wait(), 5.0)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class RenderPool:
    """Up to ``limits.processes`` rendering children, each serving one request at a time."""

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    async def render(
        self, templates: CampaignTemplates, contexts: Sequence[Mapping[str, Any]]
    ) -> list[RenderedMessage]:
        """Render the campaign for each context, in order; TemplateError names the bound or error."""
        answer = await self._request(
            {"op": "render", "templates": [templates.subject, templates.html, templates.text], "contexts": contexts},
            messages=len(contexts),
            field=None,
        )
        return [RenderedMessage(subject, html, text) for subject, html, text in answer["messages"]]

    async def check(self, field: str, source: str, *, derive_text: bool = False) -> CheckedField:
        """Compile ``source`` and render it once with a sample recipient, within the same bounds.

        With ``derive_text`` (html without a text version) the text made from it is checked and returned.
        """
        (checked,) = await self.check_all([(field, source, derive_text)])
        return checked

    async def check_all(self, fields: Sequence[tuple[str, str, bool]]) -> list[CheckedField]:
        """``check`` for several (field, source, derive_text) in one exchange; the first failing field
        raises, named."""
        request = {"op": "check", "fields": [{"field": f, "source": s, "derive_text": d} for f, s, d in fields]}
        # One sample message, however many fields make it up: the bound of a create-time check.
        answer = await self._request(request, messages=1, field=fields[0][0] if fields else None)
        return [CheckedField(personal=bool(a["personal"]), text=a["text"]) for a in answer["fields"]]

    async def _request(self, request: dict[str, Any], *, messages: int, field: str | None) -> dict[str, Any]:
        if self._closed:
            raise RendererUnavailable("the renderer is closed")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.processes)
        seconds = self.limits.budget(messages)
        request["seconds"] = seconds
        async with self._slots:
            if self._closed:  # closed while this request waited for a process
                raise RendererUnavailable("the renderer is closed")
            child = self._idle.pop() if self._idle else await _Child.start(self.limits.memory_mib)
            self._busy.add(child)
            reusable = False
            try:
                answer = await child.exchange(request, seconds + GRACE_SECONDS)
            except TimeoutError:
                raise TemplateError(field, None, f"the template took longer than {seconds:g} s to render") from None
            except _Died as died:
                if self._closed:
                    raise RendererUnavailable("the renderer was closed") from None
                if died.returncode == -signal.SIGXCPU:
                    raise TemplateError(field, None, f"the template took longer than {seconds:g} s to render") from None
                raise TemplateError(
                    field, None, f"the template used more than {self.limits.memory_mib} MiB of memory"
                ) from None
            else:
                reusable = not answer.get("recycle")
            finally:
                self._busy.discard(child)
                if reusable and not self._closed:
                    self._idle.append(child)
                else:
                    # Killed when it may be mid-request (timeout, cancellation): its answer is not awaited.
                    await child.stop(kill=not reusable)
        error = answer.get("error")
        if error is not None:
            raise TemplateError(error["field"], error["line"], error["message"])
        return answer

    async def aclose(self) -> None:
        """Stop every child: idle ones at the end of their input, busy ones at once."""
        self._closed = True
        idle, self._idle = self._idle, []
        for child in idle:
            with contextlib.suppress(ProcessLookupError):
                await child.stop()
        for child in list(self._busy):
            with contextlib.suppress(ProcessLookupError):
                await child.stop(kill=True)
