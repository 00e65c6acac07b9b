"""Recording what the provider said, per chunk, with set-based statements.

The rows of a chunk are written in one transaction (emails rows inserted and linked to their
recipient rows); the campaign's counters move in a second, tiny one, so concurrent jobs do not
queue on the campaign's row while their chunk commits; they are settled from the rows at the end.
Mail the provider has accepted must not be sent again, so a database that is briefly unreachable is
waited for rather than given up on.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.sending.to_send import PendingRow
from mailroom.transports.base import SendResult

log = logging.getLogger(__name__)

# How long accepted mail waits for the database before its job is left to be retried (and resent).
RECORD_PATIENCE = 60.0
DATABASE_GONE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    psycopg.OperationalError,
    OSError,
)

# Emails rows are inserted and linked to their recipient rows in one statement per chunk. The provider's
# id goes in the column of the route the mail took (esp_message_id for the ESP), so each row shows it.
RECORD_SENT = text(
    """
    WITH sent AS (
        SELECT * FROM unnest(CAST(:email_ids AS uuid[]), CAST(:row_ids AS uuid[]), CAST(:providers AS text[]),
                             CAST(:subjects AS text[]), CAST(:tos AS text[]), CAST(:errors AS text[]),
                             CAST(:links AS text[]))
               AS s(email_id, row_id, provider, subject, to_address, error, links)
    ),
    emails AS (
        INSERT INTO emails (id, "from", "to", cc, bcc, subject, headers, esp_message_id, google_id,
                            microsoft_id, google_credential, microsoft_credential, domain, campaign, tags, sent_at,
                            accepted, links)
        SELECT DISTINCT ON (email_id) email_id, :sender, string_to_array(to_address, ','),
               CAST(:cc AS text[]), CAST(:bcc AS text[]), subject, CAST(:headers AS jsonb),
               CASE WHEN :route = 'esp' THEN provider END,
               CASE WHEN :route = 'google' THEN provider END,
               CASE WHEN :route = 'microsoft' THEN provider END,
               CASE WHEN :route = 'google' THEN CAST(:credential AS uuid) END,
               CASE WHEN :route = 'microsoft' THEN CAST(:credential AS uuid) END,
               :domain, :campaign, CAST(:tags AS text[]), now(), 1,
               -- The tracked links of the message (a JSON array), in order: what a tracked click may redirect to.
               CASE WHEN links IS NOT NULL THEN ARRAY(SELECT jsonb_array_elements_text(CAST(links AS jsonb))) END
        FROM sent
        RETURNING id
    ),
    linked AS (
        UPDATE email_campaign_emails e SET email = s.email_id, accepted = 1, error = s.error
        FROM sent s WHERE e.id = s.row_id AND e.email IS NULL
        RETURNING e.id
    )
    SELECT count(*) FROM linked
    """
)

# A Gmail thread is known once the first message of the campaign is sent into it.
RECORD_THREAD = text("UPDATE email_campaigns SET thread_key = :key WHERE id = :campaign AND thread_key IS NULL")

RECORD_FAILED = text(
    """
    WITH failed AS (
        UPDATE email_campaign_emails e SET error = f.error, failed = 1
        FROM unnest(CAST(:row_ids AS uuid[]), CAST(:errors AS text[])) AS f(row_id, error)
        WHERE e.id = f.row_id AND e.email IS NULL AND e.error IS NULL
        RETURNING e.id
    )
    SELECT count(*) FROM failed
    """
)

GIVE_UP = text(
    """
    WITH failed AS (
        UPDATE email_campaign_emails SET error = :reason, failed = 1
        WHERE campaign = :campaign AND seq BETWEEN :first AND :last AND email IS NULL AND error IS NULL
        RETURNING id
    )
    SELECT count(*) FROM failed
    """
)

BUMP_COUNTERS = text(
    "UPDATE email_campaigns SET sent = sent + :sent, accepted = accepted + :sent, failed = failed + :failed "
    "WHERE id = :campaign"
)


# Once nothing is left to send, the running totals are replaced by a count of the rows themselves, so a
# worker that died between recording a chunk and moving the totals leaves no lasting error.
SETTLE_COUNTERS = text(
    """
    UPDATE email_campaigns c
    SET sent = t.sent, accepted = greatest(c.accepted, t.accepted), failed = greatest(c.failed, t.failed)
    FROM (
        SELECT count(email) AS sent, coalesce(sum(accepted), 0) AS accepted, coalesce(sum(failed), 0) AS failed
        FROM email_campaign_emails WHERE campaign = :campaign
    ) t
    WHERE c.id = :campaign AND NOT EXISTS (
        SELECT 1 FROM email_campaign_emails WHERE campaign = :campaign AND email IS NULL AND error IS NULL
    )
    RETURNING c.recipients_count, c.sent, c.failed, extract(epoch FROM now() - c.executed_at) AS seconds
    """
)


async def settle_counters(session: AsyncSession, campaign: uuid.UUID) -> Any | None:
    """Settle the totals once nothing is left to send; returns them (with seconds since execution), else None."""
    return (await session.execute(SETTLE_COUNTERS, {"campaign": campaign})).first()


async def bump_counters(session: AsyncSession, campaign: uuid.UUID, *, sent: int = 0, failed: int = 0) -> None:
    if sent or failed:
        await session.execute(BUMP_COUNTERS, {"campaign": campaign, "sent": sent, "failed": failed})


async def give_up(session: AsyncSession, campaign: uuid.UUID, first: int, last: int, reason: str) -> None:
    """The last attempt of a slice failed: its unsent rows carry the reason instead of staying pending."""
    params = {"campaign": campaign, "first": first, "last": last, "reason": reason[:500]}
    failed = (await session.execute(GIVE_UP, params)).scalar_one()
    await bump_counters(session, campaign, failed=failed)


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What happened to one chunk of a campaign's recipients, as record() stores it.

    ``route`` is where the mail went: "esp" (Mailgun, SMTP, outbox), "google" or "microsoft" (the
    user's mailbox through ``credential``). ``email_ids`` and ``links`` have one entry per row: the emails
    row id its message was built with (its tracked links name it) and the message's tracked links in order
    (None when not tracked). A shared message (one for the whole campaign) gives every row the same id,
    links and ``to``.
    """

    campaign: uuid.UUID
    rows: Sequence[PendingRow]
    results: Sequence[SendResult]
    subjects: Sequence[str]
    from_header: str
    tags: Sequence[str]
    headers: Mapping[str, str]
    domain: str | None
    route: str = "esp"
    credential: uuid.UUID | None = None
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    to: str | None = None
    email_ids: Sequence[uuid.UUID] = ()
    links: Sequence[Sequence[str] | None] = ()


def _links_json(links: Sequence[str] | None) -> str | None:
    return None if links is None else orjson.dumps(list(links)).decode()


async def record(sessionmaker: async_sessionmaker[AsyncSession], outcome: ChunkOutcome) -> int:
    """Store what happened; returns how many rows are still pending (temporary refusals)."""
    rows, results = outcome.rows, outcome.results
    each = list(zip(rows, results, outcome.subjects, outcome.email_ids, outcome.links, strict=True))
    sent = [(row, result, subject, email_id, links) for row, result, subject, email_id, links in each
            if result.provider_id]  # fmt: skip
    failed = [(row, result) for row, result, *_ in each if not result.provider_id and result.permanent]
    sent_params = {
        "email_ids": [email_id for *_, email_id, _ in sent],
        "links": [_links_json(links) for *_, links in sent],
        "row_ids": [row.id for row, *_ in sent],
        "providers": [result.provider_id for _, result, *_ in sent],
        "subjects": [subject for _, _, subject, *_ in sent],
        "tos": [outcome.to if outcome.to is not None else row.email_address for row, *_ in sent],
        "errors": [result.error for _, result, *_ in sent],
        "sender": outcome.from_header,
        "cc": list(outcome.cc),
        "bcc": list(outcome.bcc),
        "headers": orjson.dumps(dict(outcome.headers)).decode(),
        "route": outcome.route,
        "credential": outcome.credential,
        "domain": outcome.domain,
        "campaign": outcome.campaign,
        "tags": list(outcome.tags),
    }
    failed_params = {
        "row_ids": [row.id for row, _ in failed],
        "errors": [result.error or "refused" for _, result in failed],
    }
    thread = next((result.thread_id for result in results if result.thread_id), None)
    campaign = outcome.campaign
    waited = 0.0
    while True:
        try:
            async with sessionmaker() as session, session.begin():
                linked = (await session.execute(RECORD_SENT, sent_params)).scalar_one() if sent else 0
                refused = (await session.execute(RECORD_FAILED, failed_params)).scalar_one() if failed else 0
                if thread is not None and outcome.credential is not None:
                    # The credential and the provider's thread id together name a thread across mailboxes.
                    key = f"{outcome.credential}{thread}"
                    await session.execute(RECORD_THREAD, {"campaign": campaign, "key": key})
            break
        except DATABASE_GONE:
            if waited >= RECORD_PATIENCE:
                raise
            log.warning("database unreachable while recording sent mail for campaign %s; waiting", campaign)
            await asyncio.sleep(2.0)
            waited += 2.0
    try:
        async with sessionmaker() as session, session.begin():
            await bump_counters(session, campaign, sent=linked, failed=refused)
    except DATABASE_GONE:
        # The rows are safe; only the running totals lag until the next chunk's database round trip.
        log.warning("could not move the counters of campaign %s", campaign)
    return len(rows) - len(sent) - len(failed)
