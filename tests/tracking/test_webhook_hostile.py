"""POST /emails/events against hostile calls: timestamps that are not numbers, and signatures computed
as Mailgun documents them."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.tracking.webhooks import sign
from tests.support.events import SIGNING_KEY, event, stored_events, taken_tokens, use_signing_key

MID = "20240101000000.9.9@mg.example.com"


@pytest.fixture(autouse=True)
def _signing_key(app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    use_signing_key(app, settings, monkeypatch)


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    raw = json.dumps(body).encode()  # ensure_ascii: a lone surrogate goes as its escape
    return await client.post("/emails/events", content=raw, headers={"content-type": "application/json"})


def signed_at(data: dict[str, Any], timestamp: str) -> dict[str, Any]:
    token = secrets.token_hex(25)
    return {"signature": {"timestamp": timestamp, "token": token, "signature": sign(SIGNING_KEY, timestamp, token)},
            "event-data": data}  # fmt: skip


@pytest.mark.parametrize("timestamp", ["nan", "NaN", "-nan", "inf", "-inf", "infinity", "1e999"])
async def test_a_timestamp_that_is_not_a_finite_number_is_refused(
    client: httpx.AsyncClient, session: AsyncSession, timestamp: str
) -> None:
    answer = await post(client, signed_at(event("delivered", MID, "ann@example.com"), timestamp))
    assert answer.status_code == 401, answer.text
    assert answer.json()["message"].startswith("signature.timestamp: ")
    assert await stored_events(session) == [] and await taken_tokens(session) == 0


async def test_a_signature_made_as_mailgun_documents_it_is_accepted_and_one_changed_digit_is_not(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    # Mailgun: hex HMAC-SHA256 keyed with the webhook signing key, over timestamp followed by token.
    signature = hmac.new(SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    changed = signature[:7] + ("0" if signature[7] != "0" else "1") + signature[8:]
    data = event("delivered", MID, "ann@example.com")

    # The changed one first: once the genuine call took the token, any repeat is refused as replayed.
    forged = await post(client, {"signature": {"timestamp": timestamp, "token": token, "signature": changed},
                                 "event-data": data})  # fmt: skip
    assert forged.status_code == 401, forged.text
    assert forged.json()["message"] == "signature.signature: does not match"
    assert await stored_events(session) == [] and await taken_tokens(session) == 0

    genuine = await post(client, {"signature": {"timestamp": timestamp, "token": token, "signature": signature},
                                  "event-data": data})  # fmt: skip
    assert genuine.status_code == 200, genuine.text
    (row,) = await stored_events(session)
    assert row["provider_event_id"] == data["id"] and row["recipient"] == "ann@example.com"
