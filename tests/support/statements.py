"""Counting the SQL statements the app runs, at the driver: every execute on a psycopg cursor.

The reads of the API and the ORM's writes alike go through psycopg's AsyncCursor, so this sees them all.
The bearer token's check is left out: it is remembered for a second (crm.tokens.HOLDER_TTL), so whether a
request runs it depends on the clock, not on what the request asks for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from mailroom.crm.tokens import HOLDER_SQL, TOUCH_SQL

_TOKEN_CHECK = {HOLDER_SQL, TOUCH_SQL}


@contextmanager
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The text of each statement executed inside the block, in order."""
    seen: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def counted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if query not in _TOKEN_CHECK:
            seen.append(str(query))
        return await execute(cursor, query, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.AsyncCursor, "execute", counted)
        yield seen
