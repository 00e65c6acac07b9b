"""The Jinja sandbox campaign templates run in, with cheap caps on what one expression may build.

Templates are written by users, so they run in an immutable sandbox: no attribute starting with
``_``, no mutation of the context. On top of that, every operation whose cost a single small
argument decides is checked before it runs: repetition (``'x' * n``, ``**``), ``range()``,
padding and widths (``'{:>n}'.format``, ``'%ns' % x``, ``center``, ``ljust``, ``indent`` ...),
the growth of ``replace`` and ``expandtabs``, ``batch`` and ``slice`` counts, ``lipsum``.
Such a template fails at once with a reason naming the operation. The rest (loops, long chains of
small steps) is bounded by the render's time, memory and output limits (``templating/renderer.py``).
"""

from __future__ import annotations

import functools
import inspect
import re
import types
from collections.abc import Callable, Mapping
from string import Formatter
from typing import Any

from jinja2 import ChainableUndefined, Undefined
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, sync_do_slice
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import generate_lorem_ipsum
from markupsafe import Markup

# The most characters one operation may add to a value: big enough for any real template, small
# enough that one expression cannot eat the renderer.
MAX_BUILT = 100_000
MAX_RANGE = 10_000
MAX_EXPONENT = 100
# Bits of a number built with **: 10 ** 30,000 is far past any use and still instant.
MAX_POWER_BITS = 100_000
MAX_LIPSUM = 100


class TooLarge(SecurityError):
    """An operation would build a value past a cap; the message names the operation and the cap."""


def _none_to_empty(value: Any) -> Any:
    # Contacts often have NULL columns; "None" in an email would look like a bug.
    return "" if value is None else value


def _at_most(value: Any, limit: int, what: str) -> None:
    if isinstance(value, int) and abs(value) > limit:
        raise TooLarge(f"the template asked for {what} of {value} (at most {limit})")


def _growth(added: int, what: str) -> None:
    if added > MAX_BUILT:
        raise TooLarge(f"the template built a value that is too large ({what} would add {added} characters)")


# [[fill]align][sign][z][#][0][width][grouping][.precision]: each part is matched at most once.
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?", re.DOTALL)
_DIGITS = re.compile(r"\d*")


def _check_format_spec(spec: str) -> None:
    match = _FORMAT_SPEC.match(spec)
    for digits in match.groups() if match else ():
        if digits and (len(digits) > 9 or int(digits) > MAX_BUILT):
            raise TooLarge(f"the template asked for a format width or precision of {digits} (at most {MAX_BUILT})")


def _check_percent(fmt: str | bytes, values: Any) -> None:
    """Widths and precisions of a ``%`` format, literal or ``*``, in one forward pass."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    positional = values if isinstance(values, tuple) else (values,)
    used = 0
    at = text.find("%")
    while at != -1:
        i = at + 1
        if text.startswith("(", i):
            close = text.find(")", i)
            if close == -1:
                return  # Python refuses the format itself
            i = close + 1
        while i < len(text) and text[i] in "#0- +":
            i += 1
        for part in ("width", "precision"):
            if part == "precision":
                if not text.startswith(".", i):
                    break
                i += 1
            if text.startswith("*", i):
                _at_most(positional[used] if used < len(positional) else None, MAX_BUILT, f"a {part}")
                used += 1
                i += 1
            else:
                end = _DIGITS.match(text, i).end()  # type: ignore[union-attr]
                if end - i > 9 or (end > i and int(text[i:end]) > MAX_BUILT):
                    raise TooLarge(f"the template asked for a {part} of {text[i:end]} (at most {MAX_BUILT})")
                i = end
        while i < len(text) and text[i] in "hlL":
            i += 1
        if i < len(text) and text[i] != "%":
            used += 1
        at = text.find("%", i + 1)


def _replaced_growth(s: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(s, str | bytes) and isinstance(old, type(s)) and isinstance(new, type(s))):
        return
    subject: Any = s  # str or bytes, with old of the same type
    found = len(s) + 1 if not old else subject.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    _growth(found * (len(new) - len(old)), "replace")


def _check_method(owner: Any, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Checks for the str/bytes methods whose size comes from an argument."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill"):
        _at_most(first, MAX_BUILT, f"a {name}() width")
    elif name == "expandtabs":
        size = first if isinstance(first, int) else 8
        _growth(owner.count("\t" if isinstance(owner, str) else b"\t") * max(size, 0), "expandtabs")
    elif name == "replace" and len(args) >= 2:
        _replaced_growth(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))


def _bounded_filter(original: Callable[..., Any], check: Callable[[dict[str, Any]], None]) -> Callable[..., Any]:
    """``original`` (keeping how Jinja passes it context) preceded by ``check`` of its bound arguments."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        check(bound.arguments)
        return original(*args, **kwargs)

    return bounded


def _lines(value: Any) -> int:
    return value.count("\n") + 1 if isinstance(value, str) else 1


def _indent(a: dict[str, Any]) -> None:
    width = a["width"]
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _growth(_lines(a["s"]) * pad, "indent")


def _wordwrap(a: dict[str, Any]) -> None:
    _at_most(a["width"], MAX_BUILT, "a wordwrap() width")
    s, width, wrap = a["s"], a["width"], a["wrapstring"]
    if isinstance(s, str) and isinstance(width, int) and isinstance(wrap, str) and width > 0:
        _growth((len(s) // width + _lines(s)) * len(wrap), "wordwrap")


_FILTER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "center": lambda a: _at_most(a["width"], MAX_BUILT, "a center() width"),
    "indent": _indent,
    "wordwrap": _wordwrap,
    "truncate": lambda a: _at_most(a["length"], MAX_BUILT, "a truncate() length"),
    "replace": lambda a: _replaced_growth(a["s"], a["old"], a["new"], a["count"]),
    "format": lambda a: _check_percent(a["value"], a["kwargs"] or a["args"]) if isinstance(a["value"], str) else None,
    "batch": lambda a: _at_most(a["linecount"], MAX_BUILT, "a batch() size"),
    "slice": lambda a: _at_most(a["slices"], MAX_BUILT, "a slice() count"),
}


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TooLarge(f"the template asked for a range of {len(numbers)} numbers (at most {MAX_RANGE})")
    return numbers


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    _at_most(n, MAX_LIPSUM, "lipsum() paragraphs")
    _at_most(max, MAX_LIPSUM, "lipsum() words")
    return generate_lorem_ipsum(n, html, min, max)


class _BoundedFormatter(SandboxedFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    pass


class CampaignEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _range
        self.globals["lipsum"] = _lipsum
        for name, check in _FILTER_CHECKS.items():
            # slice is registered as its async variant, whose signature is not the one it is called with.
            original = sync_do_slice if name == "slice" else FILTERS[name]
            self.filters[name] = _bounded_filter(original, check)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Jinja returns an Undefined that only fails when printed; chained or tested in an
        # `if`, it would pass silently. Failing at once gives the user a clear reason.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int):
            if abs(right) > MAX_EXPONENT:
                raise TooLarge("the template raised a number to a power that is too large")
            if isinstance(left, int) and left.bit_length() * right > MAX_POWER_BITS:
                raise TooLarge("the template raised a number to a power that is too large")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple | bytes) and isinstance(count, int)
                if sized and len(seq) * count > MAX_BUILT:
                    raise TooLarge("the template built a value that is too large")
        elif operator == "%" and isinstance(left, str | bytes):
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(owner, str | bytes):
            _check_method(owner, __obj.__name__, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format / format_map through a formatter that checks each field's width first."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        owner: Any = value.__self__
        if not isinstance(owner, str):
            return None
        formatter: Formatter = (
            _BoundedEscapeFormatter(self, escape=owner.escape) if isinstance(owner, Markup) else _BoundedFormatter(self)
        )
        is_map = value.__name__ == "format_map"
        str_type = type(owner)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            return str_type(formatter.vformat(owner, args, kwargs))

        return functools.update_wrapper(wrapper, value)


@functools.cache
def environment(*, html: bool) -> CampaignEnvironment:
    """The shared sandbox for html (autoescaping) or for subject/text (no escaping), built once."""
    # ChainableUndefined: a contact without an address renders {{recipient.address.city}} as
    # empty instead of failing the campaign, and still reads as false in `or` / `if`.
    return CampaignEnvironment(
        autoescape=html, finalize=_none_to_empty, keep_trailing_newline=True, undefined=ChainableUndefined
    )
