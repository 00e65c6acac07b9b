"""Where uploaded files' bytes live: a folder under the data dir, addressed by the file row's path."""

from __future__ import annotations

import os
from pathlib import Path


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _full(self, path: str) -> Path:
        full = (self.root / path).resolve()
        # A stored path is ours, but never let one reach outside the storage folder.
        if not full.is_relative_to(self.root):
            raise ValueError(f"file path {path!r} leaves the storage folder")
        return full

    def read(self, path: str) -> bytes:
        return self._full(path).read_bytes()

    def write(self, path: str, data: bytes) -> None:
        full = self._full(path)
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.with_name(full.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, full)
