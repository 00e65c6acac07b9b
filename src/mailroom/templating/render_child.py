"""The rendering process: ``python -m mailroom.templating.render_child MEMORY_MIB``.

Started and fed by ``templating/renderer.py``. It reads length-prefixed JSON requests on stdin and
answers each on the original stdout (fd 1 is pointed at stderr, so a stray print cannot corrupt an
answer). Its address space is capped (RLIMIT_AS), every request runs under a timer that interrupts
the template where it is (so the answer names the field and line), and RLIMIT_CPU is a backstop
for work the timer cannot interrupt. It exits when its stdin closes.

Requests, each with ``seconds``, the time it may take:
  {"op": "render", "templates": [subject, html, text], "contexts": [...]}
      -> {"messages": [[subject, html, text], ...]}
  {"op": "check", "fields": [{"field": ..., "source": ..., "derive_text": bool}, ...]}
      -> {"fields": [{"personal": bool, "text": str | null}, ...]}
Either may answer {"error": {"field", "line", "message"}, "recycle": bool}; recycle asks the parent
to replace this process (after running out of memory its heap is not to be trusted).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import resource
import signal
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO

import orjson

from mailroom.templating.render import (
    Interrupted,
    TemplateError,
    check_field,
    compile_campaign,
    html_to_text,
)
from mailroom.templating.variables import SAMPLE_CONTEXT

# After the timer first fires, it fires again this often, in case template code swallowed it.
REFIRE = 0.5


class _Limits:
    def __init__(self, memory_mib: int) -> None:
        self.memory_mib = memory_mib
        self.seconds = 0.0

    def time_message(self) -> str:
        return f"the template took longer than {self.seconds:g} s to render"

    def memory_message(self) -> str:
        return f"the template used more than {self.memory_mib} MiB of memory"


def _read(stream: BinaryIO) -> bytes | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    body = stream.read(size)
    return body if len(body) == size else None


def _write(fd: int, payload: Any) -> None:
    data = orjson.dumps(payload)
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        view = view[os.write(fd, view) :]


def _error(exc: TemplateError, limits: _Limits, field: str | None) -> dict[str, Any]:
    message = limits.memory_message() if exc.out_of_memory else exc.reason
    return {
        "error": {"field": exc.field or field, "line": exc.line, "message": message},
        "recycle": exc.out_of_memory,
    }


class _Renderer:
    def __init__(self, limits: _Limits) -> None:
        self.limits = limits
        self.field: str | None = None  # what is being worked on, for failures outside a template

    def render(self, request: Mapping[str, Any]) -> dict[str, Any]:
        subject, html, text = request["templates"]
        compiled = compile_campaign(subject or "", html, text)  # its templates are kept once compiled
        messages = []
        for context in request["contexts"]:
            if "user" not in context and "sender" in context:
                context["user"] = context["sender"]
            message = compiled.render(context)
            messages.append((message.subject, message.html, message.text))
        return {"messages": messages}

    def check(self, request: Mapping[str, Any]) -> dict[str, Any]:
        # A campaign's fields in one exchange: a create costs one round trip to this process, not three.
        return {"fields": [self._check_one(item) for item in request["fields"]]}

    def _check_one(self, item: Mapping[str, Any]) -> dict[str, Any]:
        field, source = item["field"], item["source"]
        self.field = field
        sample = SAMPLE_CONTEXT
        personal = check_field(field, source, sample)
        derived = html_to_text(source) if item.get("derive_text") else None
        if derived is not None:
            try:
                check_field("text", derived, sample)
            except TemplateError as exc:
                raise TemplateError(field, None, f"the text made from it does not render: {exc}") from None
        return {"personal": personal, "text": derived}

    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.field = None
        # A zero interval would disarm the timer rather than fire it at once.
        self.limits.seconds = max(float(request["seconds"]), 0.01)
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = used.ru_utime + used.ru_stime
        # The backstop: past this much CPU time the kernel kills the process (SIGXCPU).
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(spent + self.limits.seconds) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
        signal.setitimer(signal.ITIMER_REAL, self.limits.seconds, REFIRE)
        try:
            return self.render(request) if request["op"] == "render" else self.check(request)
        except TemplateError as exc:
            return _error(exc, self.limits, self.field)
        except Interrupted as exc:
            return _error(TemplateError(None, None, str(exc)), self.limits, self.field)
        except MemoryError:
            return _error(TemplateError(None, None, "", out_of_memory=True), self.limits, self.field)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)


def main() -> None:
    limits = _Limits(int(sys.argv[1]))
    answers = os.dup(1)
    os.dup2(2, 1)
    # A chunk's answer is a few hundred kilobytes: a pipe that holds it whole takes it in one write
    # and one wake-up of the parent, instead of one per 64 KiB (Linux only; the default elsewhere).
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(answers, fcntl.F_SETPIPE_SZ, 1 << 20)
    requests = os.fdopen(0, "rb", buffering=1 << 16)
    # The parent decides when this process stops (by closing its stdin); Ctrl-C in a terminal
    # reaches the whole process group and must not kill it mid-answer.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def out_of_time(signum: int, frame: Any) -> None:
        raise Interrupted(limits.time_message())

    signal.signal(signal.SIGALRM, out_of_time)
    cap = limits.memory_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    renderer = _Renderer(limits)
    _write(answers, {"ready": True})
    while (raw := _read(requests)) is not None:
        try:
            answer = renderer.handle(orjson.loads(raw))
        except MemoryError:
            answer = _error(TemplateError(None, None, "", out_of_memory=True), limits, renderer.field)
        except Interrupted as exc:
            # The timer fired between the end of a render and its being stopped.
            answer = _error(TemplateError(None, None, str(exc)), limits, renderer.field)
        try:
            _write(answers, answer)
        except MemoryError:
            _write(answers, _error(TemplateError(None, None, "", out_of_memory=True), limits, renderer.field))
        if answer.get("recycle"):
            return


if __name__ == "__main__":
    main()
