"""The import-linter layers contract names every module and package of mailroom, so none escapes it."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import mailroom


def test_every_top_level_module_is_in_a_layer() -> None:
    config = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (layers,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    named = {name.strip() for layer in layers["layers"] for name in layer.replace("|", ":").split(":")}
    modules = {f"mailroom.{m.name}" for m in pkgutil.iter_modules(mailroom.__path__)}
    assert modules - named == set(), "add these to a layer in pyproject.toml"
