"""Running the API with other settings for a while: the app reads its settings on each request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

from mailroom.config import Settings


@contextmanager
def app_settings(app: FastAPI, **changes: Any) -> Iterator[Settings]:
    """The app's settings with ``changes`` (validated like the environment's) for the duration of the block."""
    before: Settings = app.state.settings
    changed = Settings.model_validate({**before.model_dump(), **changes})
    app.state.settings = changed
    try:
        yield changed
    finally:
        app.state.settings = before
