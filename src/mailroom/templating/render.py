"""Campaign templates: compile once, render per recipient, inside a sandbox, within output limits.

Subject, html and text are Jinja2 templates written by users. They run in the sandbox of
``templating/sandbox.py``; values inserted into html are escaped (a contact called ``<script>``
stays text); subject and text are not escaped, since they are not markup. A rendered field that
grows past its limit (below) stops rendering at once. Time and memory are bounded by the process
that renders: in the service that is always a child of ``templating/renderer.py``, never the event loop.

Cost: a ~2 KB html template with three variables renders in about 10 µs and compiles in about 0.3 ms,
so compiled templates are kept (``_compile_reading``) and rendering is negligible next to building and
sending the message.
"""

from __future__ import annotations

import types
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.environment import Template
from jinja2.exceptions import SecurityError

from mailroom.templating.html_text import html_to_text
from mailroom.templating.sandbox import CampaignEnvironment, TooLarge, environment
from mailroom.templating.variables import UnknownVariable, unknown_variables

# What one rendered message may hold. A subject longer than a header line (RFC 5322: 998
# characters) cannot be sent as one; 2 MiB of html or text is far past any newsletter.
MAX_SUBJECT_CHARS = 998
MAX_BODY_BYTES = 2 * 1024 * 1024
# Source characters of compiled templates a rendering process keeps (see _compile_reading): a few
# large newsletters or thousands of small ones, a small part of the process's memory bound.
COMPILED_BUDGET = 4 * 1024 * 1024
_compiled: OrderedDict[tuple[str, str], Compiled] = OrderedDict()
_compiled_chars = 0


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled template, the top-level variables it reads and the reads of variables that do not exist."""

    template: Template
    reads: frozenset[str]
    unknown: tuple[UnknownVariable, ...]


class TemplateError(Exception):
    """A template that does not compile or cannot be rendered; the message is safe to show a user.

    ``field`` is None when the failure cannot be pinned on one field (the renderer had to be
    stopped from outside). ``out_of_memory`` lets the renderer name its memory bound.
    """

    def __init__(self, field: str | None, line: int | None, message: str, *, out_of_memory: bool = False) -> None:
        self.field = field
        self.line = line
        self.reason = message
        self.out_of_memory = out_of_memory
        where = f"{field}: line {line}" if field and line is not None else field
        super().__init__(f"{where}: {message}" if where else message)


class Interrupted(Exception):
    """Raised inside a compile or render by the process running it when a bound ran out.

    An Exception, not a BaseException, so that Jinja attaches the template line to it; its
    message names the bound.
    """


def _env_for(field: str) -> CampaignEnvironment:
    return environment(html=field == "html")


def _compile(field: str, source: str) -> Template:
    return _compile_reading(field, source).template


def _compile_reading(field: str, source: str) -> Compiled:
    """The compiled template and what it reads, from one parse.

    Compiling costs about 0.3 ms a field (rendering, 10 µs): a create-time check compiles subject, html
    and the text made from it, and campaigns made from one newsletter template repeat the same sources.
    The process that renders keeps what it compiled, within COMPILED_BUDGET characters of source; a
    template that fails is compiled (and refused) afresh each time.
    """
    key = (field, source)
    found = _compiled.get(key)
    if found is not None:
        _compiled.move_to_end(key)
        return found
    found = _compile_fresh(field, source)
    global _compiled_chars
    _compiled[key] = found
    _compiled_chars += len(source)
    while _compiled_chars > COMPILED_BUDGET and len(_compiled) > 1:
        (_, evicted), _ = _compiled.popitem(last=False)
        _compiled_chars -= len(evicted)
    return found


def _compile_fresh(field: str, source: str) -> Compiled:
    env = _env_for(field)
    try:
        ast = env.parse(source)
        unknown = tuple(unknown_variables(ast, frozenset(env.globals)))
        return Compiled(env.from_string(ast), frozenset(meta.find_undeclared_variables(ast)), unknown)
    except TemplateSyntaxError as exc:
        raise TemplateError(field, exc.lineno, exc.message or "invalid template") from None
    except Interrupted as exc:
        raise TemplateError(field, None, str(exc)) from None
    except RecursionError:
        raise TemplateError(field, None, "the template is nested too deeply") from None
    except MemoryError:
        raise TemplateError(field, None, "the template is too large to compile", out_of_memory=True) from None
    except Exception as exc:
        # Python's own compiler refuses some shapes Jinja accepts (too many nested blocks).
        raise TemplateError(field, None, f"the template cannot be compiled: {exc}") from None


def check_template(field: str, source: str) -> None:
    """Raise TemplateError (naming field and line) when ``source`` does not compile."""
    _compile(field, source)


def uses_variable(source: str, name: str) -> bool:
    """Whether the template reads the top-level variable ``name``; False when it does not parse."""
    try:
        ast = environment(html=False).parse(source)
    except (TemplateSyntaxError, RecursionError):
        return False
    return name in meta.find_undeclared_variables(ast)


def _template_line(tb: types.TracebackType | None) -> int | None:
    # Jinja rewrites tracebacks so template frames carry the template's own line numbers.
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    html: str | None
    text: str


@dataclass(frozen=True, slots=True)
class CompiledCampaign:
    """The three templates of a campaign, compiled once and rendered for each recipient."""

    subject: Template
    html: Template | None
    text: Template

    def render(self, context: Mapping[str, Any]) -> RenderedMessage:
        """Render for one recipient; raises TemplateError with a reason safe to show the user.

        ``context`` holds ``recipient``, ``sender`` and ``email``; ``user`` is added as a
        synonym of ``sender`` when absent.
        """
        if "user" not in context and "sender" in context:
            context = {**context, "user": context["sender"]}
        return RenderedMessage(
            subject=_render("subject", self.subject, context),
            html=_render("html", self.html, context) if self.html is not None else None,
            text=_render("text", self.text, context),
        )


def _too_long(field: str) -> TemplateError:
    if field == "subject":
        return TemplateError(field, None, f"the rendered subject is longer than {MAX_SUBJECT_CHARS} characters")
    return TemplateError(field, None, f"the rendered {field} is larger than {MAX_BODY_BYTES} bytes")


def _render(field: str, template: Template, context: Mapping[str, Any]) -> str:
    # Characters are counted as the pieces come, so a template that would produce gigabytes
    # stops at the limit instead of building them first.
    limit = MAX_SUBJECT_CHARS if field == "subject" else MAX_BODY_BYTES
    pieces: list[str] = []
    size = 0
    try:
        for piece in template.generate(context):
            size += len(piece)
            if size > limit:
                raise _too_long(field)
            pieces.append(piece)
    except TemplateError:
        raise
    except (TooLarge, Interrupted) as exc:
        raise TemplateError(field, _template_line(exc.__traceback__), str(exc)) from None
    except SecurityError as exc:
        raise TemplateError(
            field, _template_line(exc.__traceback__), f"the template tried to access an unsafe attribute ({exc})"
        ) from None
    except MemoryError as exc:
        line = _template_line(exc.__traceback__)
        raise TemplateError(field, line, "the template ran out of memory", out_of_memory=True) from None
    except RecursionError as exc:
        raise TemplateError(field, _template_line(exc.__traceback__), "the template is nested too deeply") from None
    except Exception as exc:
        # Anything a template can do wrong at render time (1/0, calling an undefined name,
        # adding a string to a number) fails the campaign with a readable reason.
        raise TemplateError(field, _template_line(exc.__traceback__), str(exc) or type(exc).__name__) from None
    text = "".join(pieces)
    # Up to 4 bytes a character: only a long text can be past the limit in bytes and not in characters.
    if field != "subject" and size * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit:
        raise _too_long(field)
    return text


def check_field(field: str, source: str, context: Mapping[str, Any]) -> bool:
    """Compile and render one field once, with the limits of a real render (a create-time check), and
    refuse a read of a variable that does not exist (templating/variables.py).

    Returns whether it reads ``recipient`` (so the campaign must go one message per recipient).
    """
    compiled = _compile_reading(field, source)
    if compiled.unknown:
        first = compiled.unknown[0]
        raise TemplateError(field, first.line, first.message())
    _render(field, compiled.template, context)
    return "recipient" in compiled.reads


def compile_campaign(subject: str, html: str | None, text: str | None) -> CompiledCampaign:
    """Compile a campaign's templates; TemplateError names the field and line of a syntax error.

    Without text, the text template is derived from the html (Jinja expressions kept);
    with neither, text is a single space, as stored by the API.
    """
    if not text:
        text = html_to_text(html) if html else " "
    return CompiledCampaign(
        subject=_compile("subject", subject),
        html=_compile("html", html) if html else None,
        text=_compile("text", text),
    )


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_SUBJECT_CHARS",
    "CompiledCampaign",
    "Interrupted",
    "RenderedMessage",
    "TemplateError",
    "check_field",
    "check_template",
    "compile_campaign",
    "environment",
    "html_to_text",
    "uses_variable",
]
