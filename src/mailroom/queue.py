"""Deferring jobs inside the caller's transaction: a job exists exactly when the rows it is about commit.

procrastinate's Python API defers on its own connection, outside our transaction. Its SQL function
procrastinate_defer_jobs_v1 is internal but is the one way to defer thousands of jobs in one statement
in our transaction; the procrastinate pin and tests/test_schema.py hold it to the signature below.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

QUEUE = "mailroom"

DEFER_FUNCTION = "procrastinate_defer_jobs_v1"
JOB_TYPE = "procrastinate_job_to_defer_v1"
# The composite type's attributes in order (name, type as format_type spells it) and what we give each.
JOB_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("queue_name", "character varying", ":queue"),
    ("task_name", "character varying", ":task"),
    ("priority", "integer", "0"),
    ("lock", "text", "NULL"),
    ("queueing_lock", "text", "NULL"),
    ("args", "jsonb", "job.args"),
    ("scheduled_at", "timestamp with time zone", "NULL"),
)
_ROW = ", ".join(f"CAST({value} AS {type_})" for _, type_, value in JOB_ATTRIBUTES)


def defer_statement(args_select: str) -> TextClause:
    """One job per row of `args_select`, a SELECT of one jsonb column (the task's keyword arguments)."""
    return text(f"SELECT {DEFER_FUNCTION}(ARRAY(SELECT ROW({_ROW})::{JOB_TYPE} FROM ({args_select}) AS job(args)))")


async def defer_jobs(session: AsyncSession, statement: TextClause, task: str, **params: Any) -> None:
    """Defer the jobs `statement` (from defer_statement) selects, in the session's transaction."""
    await session.execute(statement, {"queue": QUEUE, "task": task, **params})
