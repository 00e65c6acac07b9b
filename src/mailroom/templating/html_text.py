"""Readable plain text from a campaign's html body, in time linear in its length.

The html is user input of up to a couple of megabytes, so every scan here moves forward only:
each construct is found with one ``str.find`` (or an anchored match of a single character class)
from where the last one ended, and a construct with no end stops the scan instead of being looked
for again from the next character. The standard library's ``html.parser`` is not used: it re-scans
an unfinished tag from every ``<`` (60 KB of ``<a `` take minutes).

Jinja markup is swapped for opaque tokens first, so that ``<``, quotes, entities and spaces inside
``{{ ... }}`` reach the text template untouched.
"""

from __future__ import annotations

import html as html_lib
import re

_JINJA_CLOSERS = {"{": "}}", "%": "%}", "#": "#}"}
_TOKEN = re.compile("\ue000(\\d{1,9})\ue001")

# Single character classes matched at a position: each character is looked at once.
_SPACE = re.compile(r"[\t\n\f\r /]*")
_TAG_NAME = re.compile(r"[^\t\n\f\r />]+")
_ATTR_NAME = re.compile(r"[^\t\n\f\r />=]+|=")
_BLANK = re.compile(r"[\t\n\f\r ]*")
_UNQUOTED = re.compile(r"[^\t\n\f\r >]*")
# What html.unescape recognises; numeric references are bounded before they reach int().
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
# Elements whose content is not markup: it runs to their end tag, whatever it holds.
_RAW_END = {"script": re.compile(r"</script", re.IGNORECASE), "style": re.compile(r"</style", re.IGNORECASE)}

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


def protect_jinja(source: str, saved: list[str]) -> str:
    """``source`` with each ``{{ }}``, ``{% %}`` and ``{# #}`` replaced by a token indexing ``saved``.

    Once one kind of opener has no closer after it, no later opener of that kind can have one,
    so that kind is not looked for again: every character is scanned a bounded number of times.
    """
    out: list[str] = []
    exhausted: set[str] = set()
    done = 0
    at = source.find("{")
    while at != -1 and len(exhausted) < len(_JINJA_CLOSERS):
        kind = source[at + 1 : at + 2]
        closer = _JINJA_CLOSERS.get(kind)
        if closer is None or kind in exhausted:
            at = source.find("{", at + 1)
            continue
        end = source.find(closer, at + 2)
        if end == -1:
            exhausted.add(kind)
            at = source.find("{", at + 1)
            continue
        end += len(closer)
        out.append(source[done:at])
        saved.append(source[at:end])
        out.append(f"\ue000{len(saved) - 1}\ue001")
        done = end
        at = source.find("{", end)
    out.append(source[done:])
    return "".join(out)


def _charref(match: re.Match[str]) -> str:
    ref = match.group(1)
    if ref.startswith("#"):
        digits = ref[1:].rstrip(";")
        hexadecimal = digits[:1] in ("x", "X")
        significant = (digits[1:] if hexadecimal else digits).lstrip("0")
        # int() refuses more than 4,300 digits; anything past 8 is outside Unicode anyway.
        if len(significant) > 8:
            return "\ufffd"
    return html_lib.unescape(match.group(0))


def unescape(text: str) -> str:
    """html.unescape, without its failure on numeric references of thousands of digits."""
    return _CHARREF.sub(_charref, text) if "&" in text else text


class _TextExtractor:
    def __init__(self) -> None:
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

    def flush(self, *, hard: bool = False) -> None:
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
        self.flush()
        self._pending_blank = True

    def starttag(self, tag: str, attrs: dict[str, str | None], *, closed: bool) -> None:
        if tag in _SKIP:
            if not closed:
                self._skip += 1
        elif self._skip:
            return
        elif tag == "br":
            self.flush(hard=True)
        elif tag in _PARAGRAPH:
            self._paragraph()
        elif tag in _LINE:
            self.flush()
        elif tag in _CELL:
            self._emit(" ")
        elif tag == "img":
            alt = attrs.get("alt")
            if alt:
                self._emit(f" {alt} ")
        elif tag == "a":
            self._links.append((attrs.get("href") or "", []))
            if closed:
                self.endtag(tag)

    def endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif self._skip:
            return
        elif tag in _PARAGRAPH:
            self._paragraph()
        elif tag in _LINE:
            self.flush()
        elif tag == "a" and self._links:
            href, parts = self._links.pop()
            href = href.strip()
            label = " ".join("".join(parts).split())
            if href and not href.startswith(("#", "javascript:")) and href not in (label, f"mailto:{label}"):
                self._emit(f" ({href})" if label else href)

    def data(self, text: str) -> None:
        if not self._skip and text:
            self._emit(unescape(text))


def _match_end(pattern: re.Pattern[str], source: str, at: int) -> int:
    found = pattern.match(source, at)
    return found.end() if found else at


def _start_tag(source: str, at: int, out: _TextExtractor) -> int:
    """Parse the start tag at ``source[at] == '<'``; returns where parsing goes on."""
    name_end = _match_end(_TAG_NAME, source, at + 1)
    tag = source[at + 1 : name_end].lower()
    attrs: dict[str, str | None] = {}
    at = name_end
    size = len(source)
    while True:
        at = _match_end(_SPACE, source, at)
        if at >= size:
            return size  # the input ended inside the tag: it is dropped, as browsers do
        if source[at] == ">":
            closed = source[at - 1] == "/" and at - 1 >= name_end
            at += 1
            break
        attr_end = _match_end(_ATTR_NAME, source, at)
        name = source[at:attr_end].lower()
        at = _match_end(_BLANK, source, attr_end)
        value: str | None = None
        if source.startswith("=", at):
            at = _match_end(_BLANK, source, at + 1)
            quote = source[at : at + 1]
            if quote in ('"', "'"):
                close = source.find(quote, at + 1)
                if close == -1:
                    return size
                value, at = source[at + 1 : close], close + 1
            else:
                value_end = _match_end(_UNQUOTED, source, at)
                value, at = source[at:value_end], value_end
        attrs.setdefault(name, None if value is None else unescape(value))
    out.starttag(tag, attrs, closed=closed)
    raw_end = _RAW_END.get(tag)
    if raw_end is not None and not closed:
        found = raw_end.search(source, at)
        end = found.start() if found else size
        out.data(source[at:end])
        at = end
    return at


def _tokens(source: str, out: _TextExtractor) -> None:
    """Feed tags and text of ``source`` to ``out``; comments, doctypes and processing instructions are dropped."""
    at = 0
    size = len(source)
    while at < size:
        lt = source.find("<", at)
        if lt == -1:
            out.data(source[at:])
            return
        out.data(source[at:lt])
        following = source[lt + 1 : lt + 2]
        if following.isascii() and following.isalpha():
            at = _start_tag(source, lt, out)
        elif following == "/" and source[lt + 2 : lt + 3].isascii() and source[lt + 2 : lt + 3].isalpha():
            close = source.find(">", lt + 2)
            if close == -1:
                return
            out.endtag(source[lt + 2 : _match_end(_TAG_NAME, source, lt + 2)].lower())
            at = close + 1
        elif source.startswith("<!--", lt):
            close = source.find("-->", lt + 4)
            at = size if close == -1 else close + 3
        elif following in ("!", "?", "/"):
            close = source.find(">", lt + 2)
            at = size if close == -1 else close + 1
        else:
            out.data("<")
            at = lt + 1


def html_to_text(html: str) -> str:
    """Readable plain text from an html body (Jinja expressions in it are kept as they are)."""
    saved: list[str] = []
    extractor = _TextExtractor()
    _tokens(protect_jinja(html, saved), extractor)
    extractor.flush()
    lines = extractor.lines
    while lines and not lines[-1]:
        lines.pop()
    start = 0
    while start < len(lines) and not lines[start]:
        start += 1
    out: list[str] = []
    for line in lines[start:]:
        if line or (out and out[-1]):
            out.append(line)
    text = "\n".join(out)
    if not saved:
        return text

    # Tokens survive the parser in text and in attribute values alike; a look-alike the html itself
    # contained (private-use characters) is left as it was.
    def restore(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return saved[index] if index < len(saved) else match.group(0)

    return _TOKEN.sub(restore, text)
