"""Mailgun's event webhooks: verified, then appended as events, one statement per batch of calls.

A call carries ``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}``; the
signature is the hex HMAC-SHA256 of timestamp + token under the webhook signing key. A body may also
be a JSON list of such calls (each signed), appended together. Any call that is forged, stale or
replayed refuses the whole request, so a refused request changes nothing; so does a call whose kept
text PostgreSQL could not store (U+0000, a lone surrogate), refused by name before it reaches a batch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from typing_extensions import TypedDict

from mailroom.errors import BadRequest, Unauthorized
from mailroom.event_types import EVENT_TYPES
from mailroom.serialize import closed
from mailroom.tracking.events import BY_INDEX, QUEUE_APPENDED
from mailroom.tracking.intake import refused_data

# Mailgun retries for hours; a signature older (or newer) than this is refused as a possible replay.
MAX_SKEW_SECONDS = 15 * 60
MAX_EVENTS_PER_REQUEST = 100
REPLAYED = "signature.token: already used"


@dataclass(frozen=True, slots=True)
class _Signed:
    timestamp: str
    token: str
    signature: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """A verified call: its token, taken once, and the event it reports as the row to append (None for a
    type that is not kept)."""

    token: str
    event: dict[str, Any] | None


def parse_body(raw: bytes) -> object:
    """The request body as JSON; BadRequest naming the body when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses a lone surrogate escape ("\ud800") that JSON's grammar allows: read such a body the
    # lenient way, so that the refusal names the field holding it.
    try:
        return json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise BadRequest("must be JSON", field="body") from None


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def _storable(value: str, field: str) -> str:
    """``value``, refused unless PostgreSQL can store it as text and in jsonb: a batch holding one call
    it cannot store would fail for every call in it."""
    if "\x00" in value:
        raise BadRequest("must not contain U+0000", field=field)
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            lone = f"U+{ord(value[exc.start]):04X}"
            raise BadRequest(f"must not contain a lone surrogate ({lone})", field=field) from None
    return value


def _text(value: object, field: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value) == "":
        raise BadRequest("must be a non-empty string", field=field)
    return _storable(str(value), field)


def _parse(body: object) -> list[_Signed]:
    items = body if isinstance(body, list) else [body]
    if not items:
        raise BadRequest("must hold at least one event", field="body")
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise BadRequest(f"at most {MAX_EVENTS_PER_REQUEST} events per request", field="body")
    calls = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("must be an object with signature and event-data", field="body")
        signature = item.get("signature")
        if not isinstance(signature, dict):
            raise Unauthorized("required", field="signature")
        data = item.get("event-data")
        if not isinstance(data, dict):
            raise BadRequest("must be an object", field="event-data")
        calls.append(
            _Signed(
                timestamp=_signature_part(signature, "timestamp"),
                token=_signature_part(signature, "token"),
                signature=_signature_part(signature, "signature"),
                data=data,
            )
        )
    return calls


def _signature_part(signature: Mapping[str, Any], name: str) -> str:
    value = signature.get(name)
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "" or len(str(value)) > 200:
        raise Unauthorized("required", field=f"signature.{name}")
    # The token is stored; all three are signed as UTF-8, which a lone surrogate has none of.
    return _storable(str(value), f"signature.{name}")


def _verify(call: _Signed, key: str, now: float) -> None:
    if not hmac.compare_digest(sign(key, call.timestamp, call.token).encode(), call.signature.encode()):
        raise Unauthorized("does not match", field="signature.signature")
    try:
        stamp = float(call.timestamp)
    except ValueError:
        stamp = math.nan
    # A NaN is never more than 15 minutes off: a call signed with one would stay valid forever.
    if not math.isfinite(stamp):
        raise Unauthorized("must be a finite number of seconds", field="signature.timestamp")
    if abs(now - stamp) > MAX_SKEW_SECONDS:
        raise Unauthorized("more than 15 minutes off", field="signature.timestamp")


# One statement per batch of calls: take each call's token, append the events of the calls whose token
# was new, queue them for counting, and answer which calls those were. An event finds its email by the
# message (Mailgun names one id per batch call, shared by its recipients, stored as Mailgun answered it:
# in angle brackets) and its recipient row by address within that email's campaign.
_APPEND_CALLS = text(
    f"""
    WITH c AS (
        SELECT * FROM jsonb_to_recordset(CAST(:calls AS jsonb)) AS c(
            n integer, token text, message text, type text, occurred_at timestamptz, severity text,
            recipient text, url text, user_agent text, ip text, reason text, provider_event_id text)
    ), taken AS (
        INSERT INTO webhook_tokens (token) SELECT DISTINCT token FROM c
        ON CONFLICT (token) DO NOTHING RETURNING token
    ), fresh AS (
        -- Two calls with one token in a batch: the first takes it, the second is a replay.
        SELECT DISTINCT ON (c.token) c.* FROM c JOIN taken t ON t.token = c.token ORDER BY c.token, c.n
    ), found AS (
        SELECT f.*, coalesce(a.id, b.id) AS message_email, coalesce(a.campaign, b.campaign) AS campaign
        FROM fresh f
        LEFT JOIN LATERAL (
            SELECT id, campaign FROM emails WHERE esp_message_id = '<' || f.message || '>' {BY_INDEX}
        ) a ON true
        LEFT JOIN LATERAL (
            SELECT id, campaign FROM emails WHERE a.id IS NULL AND esp_message_id = f.message {BY_INDEX}
        ) b ON true
        WHERE f.type IS NOT NULL
    ), appended AS (
        INSERT INTO email_events (type, source, occurred_at, severity, brand, campaign, email, campaign_email,
                                  recipient, url, user_agent, ip, reason, provider_event_id)
        SELECT f.type, 'mailgun', coalesce(f.occurred_at, now()), f.severity, cam.brand, f.campaign,
               coalesce(ce.email, f.message_email), ce.id, f.recipient, f.url, f.user_agent, f.ip, f.reason,
               f.provider_event_id
        FROM found f
        LEFT JOIN email_campaign_emails ce ON ce.campaign = f.campaign AND ce.email_address = f.recipient
        LEFT JOIN email_campaigns cam ON cam.id = f.campaign
        ORDER BY f.n
        RETURNING id, created_at
    ), queued AS (
        {QUEUE_APPENDED}
    )
    SELECT n FROM fresh
    """
)


def _occurred(data: Mapping[str, Any]) -> datetime | None:
    stamp = data.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        try:
            return datetime.fromtimestamp(float(stamp), UTC)
        except (OverflowError, OSError, ValueError):
            raise BadRequest("out of range", field="event-data.timestamp") from None
    return None


def _message_id(data: Mapping[str, Any]) -> str | None:
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    value = _str(headers, "message-id", None, "event-data.message.headers") if isinstance(headers, dict) else None
    return value.strip().strip("<>") if value and value.strip() else None


def _reason(data: Mapping[str, Any]) -> str | None:
    status = data.get("delivery-status")
    parts: list[str] = []
    if isinstance(status, dict):
        for key in ("message", "description"):
            value = _str(status, key, None, "event-data.delivery-status")
            if value and value.strip() and value.strip() not in parts:
                parts.append(value.strip())
    reason = _str(data, "reason", None) if not parts else None
    if reason:
        parts.append(reason)
    return " ".join(parts)[:1000] or None


def _str(data: Mapping[str, Any], key: str, limit: int | None = 2000, within: str = "event-data") -> str | None:
    """The string at ``key`` (of the object at ``within``), cut to ``limit``; refused if it cannot be stored."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        return None
    return _storable(value, f"{within}.{key}")[:limit]


def _user_agent(data: Mapping[str, Any]) -> str | None:
    info = data.get("client-info")
    return _str(info, "user-agent", 1000, "event-data.client-info") if isinstance(info, dict) else None


def _event(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The row a verified call's event is appended as; None for an event type that is not kept."""
    kind = data.get("event")
    if kind not in EVENT_TYPES:
        return None
    recipient = _text(data.get("recipient"), "event-data.recipient", required=False)
    severity = data.get("severity") if kind == "failed" else None
    occurred = _occurred(data)
    return {
        "message": _message_id(data),
        "type": kind,
        "occurred_at": occurred.isoformat() if occurred else None,
        "severity": severity if severity in ("temporary", "permanent") else None,
        "recipient": recipient.strip().lower()[:320] if recipient else None,
        "url": _str(data, "url") if kind == "clicked" else None,
        "user_agent": _user_agent(data),
        "ip": _str(data, "ip", 64),
        "reason": _reason(data) if kind in ("failed", "rejected", "complained") else None,
        "provider_event_id": _str(data, "id", 200),
    }


def verified_calls(body: object, key: str, *, now: float | None = None) -> list[Call]:
    """The body's calls, each signed with ``key`` within the time window; Unauthorized or BadRequest else."""
    signed = _parse(body)
    now = time.time() if now is None else now
    for call in signed:
        _verify(call, key, now)
    return [Call(call.token, _event(call.data)) for call in signed]


async def append_calls(db: AsyncSession | AsyncConnection, calls: Sequence[Call]) -> list[bool]:
    """Take each call's token and append the events of those whose token was new; per call, whether it was.

    One statement, so it is atomic on a connection in autocommit too. A token already taken (a replayed
    call) appends nothing. Unknown event types are taken and dropped: Mailgun would retry any call not
    answered 2xx.
    """
    rows = [{"n": n, "token": call.token, **(call.event or {})} for n, call in enumerate(calls)]
    fresh = set((await db.execute(_APPEND_CALLS, {"calls": orjson.dumps(rows).decode()})).scalars())
    return [n in fresh for n in range(len(calls))]


async def receive(session: AsyncSession, body: object, key: str, *, now: float | None = None) -> int:
    """Verify every call of the body, then append its known events; return how many were appended.

    Raises Unauthorized (forged, stale, replayed: the caller's transaction must roll back) or BadRequest.
    """
    calls = verified_calls(body, key, now=now)
    try:
        fresh = await append_calls(session, calls)
    except DBAPIError as exc:
        refused = refusal(exc)
        if refused is None:
            raise
        raise refused from exc
    if not all(fresh):
        raise Unauthorized(REPLAYED)
    return sum(1 for call in calls if call.event is not None)


@closed
class WebhookReceiptOut(TypedDict):
    """What a verified body answers: its events are stored."""

    appended: Annotated[int, Field(description="Events appended; calls of a type that is not kept are not counted")]


def receipt(appended: int) -> WebhookReceiptOut:
    return {"appended": appended}


def refusal(exc: Exception) -> BadRequest | None:
    """What to answer a call whose write failed because the database refused its data (not because the
    database failed); None otherwise."""
    return BadRequest("refused by the database", field="event-data") if refused_data(exc) else None


def sign(key: str, timestamp: str, token: str) -> str:
    """The signature Mailgun puts on a call (for tools that post events, such as the benchmark)."""
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


__all__: Sequence[str] = (
    "MAX_SKEW_SECONDS",
    "Call",
    "WebhookReceiptOut",
    "append_calls",
    "parse_body",
    "receipt",
    "receive",
    "refusal",
    "sign",
    "verified_calls",
)
