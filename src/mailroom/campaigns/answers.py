"""Campaigns' answers (and their recipient rows') kept as JSON, each valid for the one version of its row it
was made from.

A client polling a brand's list of campaigns is sent the same 50 campaigns again and again; reading their
40 columns and building their fields was most of a listing's CPU. The listing now reads each campaign's id
and version only, and a campaign is read whole and serialised again only when its version is one this
process has not serialised.

A version is the campaign row's ``xmin`` (the transaction that wrote this version of the row: any change to
the row, the sender's counters included, makes a new one) and the sender's ``email_confirmed``, the only
other thing a campaign's own fields show (``from_address_verified``). Reads on the read pool see committed
rows only, and one committed transaction leaves one version of a row, so a version names one content.
Nothing needs invalidating: a changed campaign has a new version, and its old entry is replaced the next
time it is read. Entries are bounded by bytes; the oldest go first.

The recipients page (GET /emails/:id/emails) is kept the same way: a recipient row's answer shows the row
and its contact's name and picture, so its version is the row's ``xmin`` and its contact's.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from psycopg import AsyncConnection

from mailroom.campaigns import reads
from mailroom.campaigns.views import campaign_email_out, campaign_fields

# The version of a campaign's answer, as SQL over a campaign row c and its sender u.
VERSION_SQL = "c.xmin::text || ':' || coalesce(u.email_confirmed::text, '')"
CAMPAIGNS_BY_ID = f"""
    SELECT {reads.CAMPAIGN_COLUMNS}, u.email_confirmed AS from_confirmed, {VERSION_SQL} AS version
    FROM email_campaigns c LEFT JOIN users u ON u.id = c."from" WHERE c.id = ANY(%(ids)s)
"""
RECIPIENT_VERSION_SQL = "ce.xmin::text || ':' || coalesce(ct.xmin::text, '')"
# A campaign is about 1 KB of JSON plus its html and text; 32 MB holds thousands of them.
MAX_BYTES = 32 * 1024 * 1024
# A campaign whose answer is larger (a long html body) is serialised every time, not kept.
MAX_ENTRY = 256 * 1024


class AnswerCache:
    """Serialised campaigns of one process, by id, each with the version it was made from."""

    def __init__(self, *, max_bytes: int = MAX_BYTES, max_entry: int = MAX_ENTRY) -> None:
        self.max_bytes, self.max_entry = max_bytes, max_entry
        self._entries: dict[uuid.UUID, tuple[str, bytes]] = {}
        self._bytes = 0

    def get(self, campaign: uuid.UUID, version: str) -> bytes | None:
        found = self._entries.get(campaign)
        return found[1] if found is not None and found[0] == version else None

    def put(self, campaign: uuid.UUID, version: str, answer: bytes) -> None:
        old = self._entries.pop(campaign, None)
        if old is not None:
            self._bytes -= len(old[1])
        if len(answer) > self.max_entry:
            return
        while self._entries and self._bytes + len(answer) > self.max_bytes:
            oldest = next(iter(self._entries))
            self._bytes -= len(self._entries.pop(oldest)[1])
        self._entries[campaign] = (version, answer)
        self._bytes += len(answer)

    def __len__(self) -> int:
        return len(self._entries)


def serialised(row: Any) -> bytes:
    """One campaign row's fields as JSON, as the answer's envelope serialises them."""
    return orjson.dumps(campaign_fields(row), option=orjson.OPT_NON_STR_KEYS)


async def _answers(
    page: Sequence[Any], cache: AnswerCache, read: Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, bytes]]]
) -> list[orjson.Fragment]:
    """The answers of the page's rows (each with an id and a version), in order: from the cache, and those
    it lacks from ``read`` (which keeps them). One lookup a row: a UUID's hash is computed in Python, and
    four of them a campaign were a tenth of a listing's CPU."""
    answers = [cache.get(row.id, row.version) for row in page]
    missing = [row.id for row, answer in zip(page, answers, strict=True) if answer is None]
    if missing:
        fresh = await read(missing)
        answers = [a if a is not None else fresh.get(row.id) for row, a in zip(page, answers, strict=True)]
    # A row gone between the two statements (never, short of a hard delete) is left out.
    return [orjson.Fragment(answer) for answer in answers if answer is not None]


async def campaigns_json(conn: AsyncConnection[Any], page: Sequence[Any], cache: AnswerCache) -> list[orjson.Fragment]:
    """The answers of the page's campaigns (rows of id and version, in order), from the cache or, for
    those it lacks, read whole in one statement and kept."""

    async def read(missing: list[uuid.UUID]) -> dict[uuid.UUID, bytes]:
        fresh = {}
        for row in await reads.fetch(conn, CAMPAIGNS_BY_ID, {"ids": missing}):
            fresh[row.id] = answer = serialised(row)
            cache.put(row.id, row.version, answer)
        return fresh

    return await _answers(page, cache, read)


async def campaign_emails_json(
    conn: AsyncConnection[Any],
    campaign: uuid.UUID,
    user: uuid.UUID,
    cache: AnswerCache,
    *,
    ordering: str,
    start: int,
    limit: int,
) -> tuple[list[orjson.Fragment], int]:
    """A page of the campaign's recipient rows as GET /emails/:id/emails answers them without associations,
    and the number of all its rows; 404 unless the user may see the campaign."""
    page, total = await reads.visible_campaign_emails(
        conn, campaign, user, ordering=ordering, start=start, limit=limit, version=RECIPIENT_VERSION_SQL
    )

    async def read(missing: list[uuid.UUID]) -> dict[uuid.UUID, bytes]:
        fresh = {}
        for version, (row, contact) in await reads.campaign_emails_by_id(conn, missing, RECIPIENT_VERSION_SQL):
            answer = orjson.dumps(campaign_email_out(row, contact, None, frozenset()), option=orjson.OPT_NON_STR_KEYS)
            fresh[row.id] = answer
            cache.put(row.id, version, answer)
        return fresh

    return await _answers(page, cache, read), total
