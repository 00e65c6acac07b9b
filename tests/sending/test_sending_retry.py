"""How soon a send job comes back after a temporary refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from procrastinate.jobs import Job

from mailroom.sending.jobs import SEND_RETRY
from mailroom.transports.base import PermanentSendError, TransientSendError


def job(attempts: int) -> Job:
    return Job(id=1, queue="mailroom", lock=None, queueing_lock=None, task_name="t", attempts=attempts)


def test_backoff_grows_and_honours_retry_after() -> None:
    now = datetime.now(UTC)
    first = SEND_RETRY.get_retry_decision(exception=TransientSendError("421"), job=job(0))
    later = SEND_RETRY.get_retry_decision(exception=TransientSendError("421"), job=job(4))
    assert first is not None and later is not None and first.retry_at and later.retry_at
    assert first.retry_at < now + timedelta(seconds=10) < later.retry_at
    asked = SEND_RETRY.get_retry_decision(exception=TransientSendError("429", retry_after=120), job=job(0))
    assert asked is not None and asked.retry_at is not None
    assert asked.retry_at >= now + timedelta(seconds=119)


def test_permanent_errors_and_the_last_attempt_are_not_retried() -> None:
    assert SEND_RETRY.get_retry_decision(exception=PermanentSendError("535"), job=job(0)) is None
    assert SEND_RETRY.get_retry_decision(exception=TransientSendError("421"), job=job(16)) is None
