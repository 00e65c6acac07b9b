"""The variables a campaign template may read, and finding the ones it reads that do not exist.

A misspelt variable (``{{ recipient.frist_name }}``) renders as nothing: the mail would go to thousands
with a hole where the name should be. So a template is refused when it creates or replaces a campaign
if it reads a variable that is not one of these, unless it gives a fallback for it: ``x or '...'``,
``x | default('...')``, or a test ``x is defined`` around it. Campaigns already stored still send as
they are: this is a check on what is written, not on what is sent.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import meta, nodes

from mailroom.serialize import full_name

# Every variable, with the example value the create-time check renders with (the sender gives each
# recipient a context of this shape: sending/slices.py).
SAMPLE_CONTEXT: dict[str, Any] = {
    "recipient": {"first_name": "Ann", "last_name": "Lee", "display_name": "Ann Lee", "email": "ann@example.com"},
    "sender": {
        "first_name": "Sam",
        "last_name": "Seller",
        "display_name": "Sam Seller",
        "email": "sam@example.com",
        "phone_number": "+1 555 0100",
    },
    "email": {"url": "https://example.com/view"},
    # The recipient's own link in mail to one recipient through the ESP; empty in a message to several.
    "unsubscribe_url": "https://example.com/unsubscribe",
}


def recipient_values(
    *, email: str, first_name: str | None, last_name: str | None, display_name: str | None
) -> dict[str, Any]:
    """``recipient`` as templates see it; display_name is the contact's full name, else an agent's name."""
    display = full_name(first_name, last_name) or display_name
    return {"first_name": first_name, "last_name": last_name, "display_name": display, "email": email}


def sender_values(
    *, email: str, first_name: str | None, last_name: str | None, display_name: str | None, phone_number: str | None
) -> dict[str, Any]:
    """``sender`` (the campaign's `from` user) as templates see it; display_name falls back to the full name."""
    return {
        "first_name": first_name,
        "last_name": last_name,
        "display_name": display_name or full_name(first_name, last_name),
        "email": email,
        "phone_number": phone_number,
    }


_KNOWN: frozenset[str] = frozenset(
    name
    for root, value in SAMPLE_CONTEXT.items()
    for name in ([root] if not isinstance(value, dict) else [root, *(f"{root}.{key}" for key in value)])
)
_READS = (nodes.Name, nodes.Getattr, nodes.Getitem)
# Filters and tests that give a missing value a fallback, or ask whether it is there.
_FALLBACK_FILTERS = frozenset({"default", "d"})
_PRESENCE_TESTS = frozenset({"defined", "undefined", "none"})


@dataclass(frozen=True, slots=True)
class UnknownVariable:
    name: str
    line: int
    suggestion: str | None

    def message(self) -> str:
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return (
            f"{self.name} is not a template variable{hint} "
            f"(give a fallback, such as {{{{ {self.name} or '' }}}}, for a value that may be missing)"
        )


def unknown_variables(ast: nodes.Template, globals_: frozenset[str]) -> list[UnknownVariable]:
    """The reads of variables that do not exist and have no fallback, in the order they appear."""
    # Names the template sets itself ({% set %}, loops, macros) are not undeclared anywhere it reads them.
    undeclared = meta.find_undeclared_variables(ast) - globals_
    # A fallback covers every read in the expression it is given for (``recipient.nick | upper or ''``).
    guarded = {_dotted(read) for node in _guarded_nodes(ast) for read in (node, *node.find_all(_READS))} - {None}
    found: list[UnknownVariable] = []
    seen: set[str] = set()
    for node in _reads(ast, undeclared):
        name = _dotted(node)
        if name is None or name in _KNOWN or name in guarded or name in seen:
            continue
        seen.add(name)
        close = difflib.get_close_matches(name, sorted(_KNOWN), n=1, cutoff=0.6)
        found.append(UnknownVariable(name, node.lineno, close[0] if close else None))
    return found


def _reads(ast: nodes.Node, undeclared: set[str]) -> Iterator[nodes.Node]:
    """Top-level names read undeclared, and one level of attribute on the known roots."""
    for node in ast.find_all(_READS):
        if isinstance(node, nodes.Name):
            if node.ctx == "load" and node.name in undeclared:
                yield node
        elif _root(node) in undeclared and _root(node) in SAMPLE_CONTEXT:
            yield node


def _root(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name):
        return str(node.node.name)
    return None


def _dotted(node: nodes.Node) -> str | None:
    """``recipient.first_name`` for a read of one attribute of a root, the name for a bare name."""
    if isinstance(node, nodes.Name):
        return str(node.name)
    root = _root(node)
    if root is None or root not in SAMPLE_CONTEXT:
        return None  # deeper or computed reads are the value's business, not a name's
    if isinstance(node, nodes.Getattr):
        return f"{root}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return f"{root}.{node.arg.value}"
    return None


def _guarded_nodes(ast: nodes.Node) -> Iterator[nodes.Node]:
    """Reads the template gives a fallback for, wherever it reads them."""
    for node in ast.find_all((nodes.Or, nodes.Filter, nodes.Test)):
        if isinstance(node, nodes.Or):
            yield node.left
        # A filter block's node is None: its body is what it filters.
        elif (
            isinstance(node, nodes.Filter | nodes.Test)
            and node.name in _FALLBACK_FILTERS | _PRESENCE_TESTS
            and node.node is not None
        ):
            yield node.node
