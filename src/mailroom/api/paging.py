"""The paging parameters every list endpoint takes, bounded so no value can reach the database as an error."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

# PostgreSQL's OFFSET is a bigint; far past any real list, and never an overflow.
MAX_START = 2**31 - 1
MAX_LIMIT = 1000

Start = Annotated[int, Query(ge=0, le=MAX_START, description="rows to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"rows to return (at most {MAX_LIMIT})")]
