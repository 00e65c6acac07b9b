"""The service secret: one key per data dir however many processes start at once, and no weak keys."""

from __future__ import annotations

import multiprocessing
import os
import stat
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mailroom.config import Settings
from tests.support.keys import TEST_SECRET_KEY

PROCESSES = 6
ROUNDS = 10


def _resolve_keys(dirs: list[str], start: Barrier, out: Any) -> None:
    keys = []
    for data_dir in dirs:
        start.wait()  # every process goes for the same fresh dir at the same moment
        keys.append(Settings(data_dir=Path(data_dir), secret_key=None).resolved_secret_key())
    out.put(keys)


def test_processes_starting_together_on_a_fresh_data_dir_agree_on_one_private_key(tmp_path: Path) -> None:
    dirs = [str(tmp_path / f"data{i}") for i in range(ROUNDS)]
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(PROCESSES), ctx.Queue()
    workers = [ctx.Process(target=_resolve_keys, args=(dirs, start, out)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    for i, data_dir in enumerate(dirs):
        key_file = Path(data_dir) / "secret.key"
        assert {keys[i] for keys in results} == {key_file.read_text().strip()}, f"round {i}"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert os.listdir(data_dir) == ["secret.key"]  # no temporary files left behind
    # A later start reads the same key back.
    assert Settings(data_dir=Path(dirs[0]), secret_key=None).resolved_secret_key() == results[0][0]


@pytest.mark.parametrize(
    "key",
    [
        "test-secret",
        "",
        "k" * 64,
        "password" * 8,
        "0123456789abcdef" * 3,  # 48 hex digits: 24 bytes
        "lqR3v2nJ8Yc0tKpWf6HsZu1bXaEo9gDmT4yCiV7",  # 39 characters of base64: under 32 bytes
    ],
)
def test_a_weak_configured_key_is_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 random bytes"):
        Settings(secret_key=key)


@pytest.mark.parametrize("key", [TEST_SECRET_KEY, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"])
def test_a_base64_or_hex_key_of_32_bytes_is_taken(key: str) -> None:
    assert Settings(secret_key=key).resolved_secret_key() == key
