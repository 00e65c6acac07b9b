"""Campaign templates: compile once, render per recipient, inside a sandbox.

Subject, html and text are Jinja2 templates written by users, so they run in an
immutable sandbox: no attribute starting with ``_``, no mutation of the context, and
guarded ``*``/``**`` so ``{{ 'x' * 10**9 }}`` cannot exhaust memory. Values inserted into
html are escaped (a contact called ``<script>`` stays text); subject and text are not
escaped, since they are not markup.

Cost: a ~2 KB html template with three variables renders in about 10 µs
(``tests/sending/test_render.py::test_render_speed`` prints the figure), so rendering is
negligible next to building and sending the message.
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, Undefined, meta
from jinja2.environment import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

# Big enough for any real template, small enough that one render cannot eat the worker.
_MAX_REPEAT = 100_000
_MAX_EXPONENT = 100


class TemplateError(Exception):
    """A template that does not compile or cannot be rendered; the message is safe to show a user."""

    def __init__(self, field: str, line: int | None, message: str) -> None:
        self.field = field
        self.line = line
        self.reason = message
        where = f"{field}: line {line}" if line is not None else field
        super().__init__(f"{where}: {message}")


def _none_to_empty(value: Any) -> Any:
    # Contacts often have NULL columns; "None" in an email would look like a bug.
    return "" if value is None else value


class _TooLarge(SecurityError):
    pass


class _CampaignEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Jinja returns an Undefined that only fails when printed; chained or tested in an
        # `if`, it would pass silently. Failing at once gives the user a clear reason.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise _TooLarge("the template raised a number to a power that is too large")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
                if sized and len(seq) * count > _MAX_REPEAT:
                    raise _TooLarge("the template built a value that is too large")
        return super().call_binop(context, operator, left, right)


@functools.cache
def environment(*, html: bool) -> ImmutableSandboxedEnvironment:
    """The shared sandbox for html (autoescaping) or for subject/text (no escaping), built once."""
    # ChainableUndefined: a contact without an address renders {{recipient.address.city}} as
    # empty instead of failing the campaign, and still reads as false in `or` / `if`.
    return _CampaignEnvironment(
        autoescape=html, finalize=_none_to_empty, keep_trailing_newline=True, undefined=ChainableUndefined
    )


def _env_for(field: str) -> ImmutableSandboxedEnvironment:
    return environment(html=field == "html")


def _compile(field: str, source: str) -> Template:
    try:
        return _env_for(field).from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(field, exc.lineno, exc.message or "invalid template") from None


def check_template(field: str, source: str) -> None:
    """Raise TemplateError (naming field and line) when ``source`` does not compile."""
    _compile(field, source)


def uses_variable(source: str, name: str) -> bool:
    """Whether the template reads the top-level variable ``name``; False when it does not parse."""
    try:
        ast = environment(html=False).parse(source)
    except TemplateSyntaxError:
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


def _render(field: str, template: Template, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except _TooLarge as exc:
        raise TemplateError(field, _template_line(exc.__traceback__), str(exc)) from None
    except SecurityError as exc:
        raise TemplateError(
            field, _template_line(exc.__traceback__), f"the template tried to access an unsafe attribute ({exc})"
        ) from None
    except Exception as exc:
        # Anything a template can do wrong at render time (1/0, calling an undefined name,
        # adding a string to a number) fails the campaign with a readable reason.
        raise TemplateError(field, _template_line(exc.__traceback__), str(exc) or type(exc).__name__) from None


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


# --- html to text -----------------------------------------------------------------------

# Jinja markup is swapped for opaque tokens before parsing, so that `<`, quotes, entities
# and spaces inside `{{ ... }}` reach the text template untouched.
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_TOKEN = re.compile("\ue000(\\d+)\ue001")

_SKIP = frozenset({"script", "style", "head", "title", "noscript", "template"})
_LINE = frozenset(
    {
        "div", "li", "tr", "table", "ul", "ol", "dl", "dt", "dd", "section", "article", "header",
        "footer", "nav", "aside", "main", "center", "figure", "figcaption", "address", "hr",
        "form", "fieldset", "pre", "body", "html",
    }
)  # fmt: skip
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"})
_CELL = frozenset({"td", "th"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._current: list[str] = []
        self._pending_blank = False
        self._skip = 0
        self._links: list[tuple[str, list[str]]] = []  # (href, label parts) for open <a>

    # Line handling: a "soft" break only ends a line that has content; <br> always does.
    def _emit(self, text: str) -> None:
        self._current.append(text)
        for _, label in self._links:
            label.append(text)

    def _break(self, *, hard: bool = False) -> None:
        line = " ".join("".join(self._current).split())
        self._current.clear()
        if not line and not hard:
            return
        if line and self._pending_blank and self.lines and self.lines[-1]:
            self.lines.append("")
        if line:
            self._pending_blank = False
        self.lines.append(line)

    def _paragraph(self) -> None:
        self._break()
        self._pending_blank = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif self._skip:
            return
        elif tag == "br":
            self._break(hard=True)
        elif tag in _PARAGRAPH:
            self._paragraph()
        elif tag in _LINE:
            self._break()
        elif tag in _CELL:
            self._emit(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._emit(f" {alt} ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", []))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "a":
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif self._skip:
            return
        elif tag in _PARAGRAPH:
            self._paragraph()
        elif tag in _LINE:
            self._break()
        elif tag == "a" and self._links:
            href, parts = self._links.pop()
            href = href.strip()
            label = " ".join("".join(parts).split())
            if href and not href.startswith(("#", "javascript:")) and href not in (label, f"mailto:{label}"):
                self._emit(f" ({href})" if label else href)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._emit(data)


def html_to_text(html: str) -> str:
    """Readable plain text from an html body (Jinja expressions in it are kept as they are)."""
    saved: list[str] = []

    def protect(match: re.Match[str]) -> str:
        saved.append(match.group(0))
        return f"\ue000{len(saved) - 1}\ue001"

    parser = _TextExtractor()
    parser.feed(_JINJA.sub(protect, html))
    parser.close()
    parser._break()
    lines = parser.lines
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    text = "\n".join(out)
    # Entities were decoded by the parser; tokens inside attribute values survive it too.
    return _TOKEN.sub(lambda m: saved[int(m.group(1))], text) if saved else text


__all__ = [
    "CompiledCampaign",
    "RenderedMessage",
    "TemplateError",
    "check_template",
    "compile_campaign",
    "environment",
    "html_to_text",
    "uses_variable",
]
