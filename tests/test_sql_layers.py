"""SQL follows the layers too: a module names in its SQL only its own package's tables and those of
packages below it. import-linter sees imports, not table names in strings; this sees those."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import mailroom
import mailroom.models  # every table's model, so every table has an owner
from mailroom.orm import Base

ROOT = Path(mailroom.__file__).parent


def owners() -> dict[str, str]:
    """Table -> the top-level package (or module) whose models define it."""
    return {m.class_.__tablename__: m.class_.__module__.split(".")[1] for m in Base.registry.mappers}


def layer_of() -> dict[str, int]:
    """Top-level package or module -> its layer's depth (0 is the top)."""
    config = tomllib.loads((ROOT.parents[1] / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return {
        name.strip().removeprefix("mailroom."): depth
        for depth, layer in enumerate(contract["layers"])
        for name in layer.replace("|", ":").split(":")
    }


def tables_named(source: str, tables: set[str]) -> set[str]:
    """The tables a module's string literals (its SQL) read or write."""
    pattern = re.compile(
        r'\b(?:FROM|JOIN|UPDATE|INTO)\s+"?(' + "|".join(sorted(tables, key=len, reverse=True)) + r")\b"
    )
    strings = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return {table for s in strings for table in pattern.findall(s)}


def test_no_module_names_a_table_of_a_layer_above_its_own() -> None:
    tables, depth = owners(), layer_of()
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        package = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for table in tables_named(path.read_text(), set(tables)):
            owner = tables[table]
            if owner != package and depth[owner] <= depth[package]:
                wrong.append(f"{path.relative_to(ROOT)} names {table} ({owner}, not below {package})")
    assert wrong == []


def test_the_check_sees_sql_in_every_form_the_code_writes_it() -> None:
    sql = 'X = text("SELECT 1 FROM contacts c JOIN brands b ON true")\nY = f"UPDATE email_campaigns SET x = {1}"'
    assert tables_named(sql, set(owners())) == {"contacts", "brands", "email_campaigns"}
