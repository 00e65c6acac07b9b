"""A campaign's report in the workspace: its counters and rates, opens and clicks over time, clicks per
link, failures, and who did what, with a CSV export of the last.

Every figure comes from the services the API answers with (``GET /emails/:id/stats``,
``GET /emails/:id/emails``), under the same rule: another brand's campaign, or a deleted one, is not found.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from mailroom.api.deps import Session
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.campaigns import reads
from mailroom.campaigns.listing import progress, rate
from mailroom.db import driver_connection
from mailroom.errors import BadRequest, NotFound
from mailroom.event_types import EVENT_TYPES
from mailroom.serialize import full_name
from mailroom.tracking import report, stats
from mailroom.tracking.settle import ECHO_SECONDS
from mailroom.web.chart import buckets, chart
from mailroom.web.guard import csrf_anchor, guarded
from mailroom.web.pages import PAGE_SIZE, SIGN_IN_PAGE, App, not_found, redirect, signed_in, user_row
from mailroom.web.render import render

# The table's orders, people who clicked first by default; each is one of the API's own.
Sort = Literal["-clicked", "-opened", "full_name", "-unsubscribed", "-failed"]
SORTS: dict[str, str] = {
    "-clicked": "Clicked first",
    "-opened": "Opened first",
    "full_name": "Name",
    "-unsubscribed": "Unsubscribed",
    "-failed": "Failed",
}
# The counters the report shows large, in this order; the rest of the stats' event types follow in a table.
HEADLINE = ("delivered", "opened", "clicked", "unsubscribed", "failed", "complained")
EXPORT_BATCH = 2000
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

router = APIRouter(prefix="/app", include_in_schema=False, route_class=StrictQueryRoute)


def recipient_status(row: Any) -> str:
    """The furthest a recipient row got, in a person's words, from its counters."""
    if row.error is not None:
        return "refused"
    for counter in ("complained", "unsubscribed", "failed", "clicked", "opened", "delivered"):
        if getattr(row, counter):
            return counter
    return "pending" if row.email is None else "sent"


def _person(row: Any) -> dict[str, Any]:
    """One line of the recipients table (and of its CSV), from a row of ``report.recipients_page``."""
    return {
        "name": full_name(row.first_name, row.last_name) or "",
        "address": row.email_address,
        "status": recipient_status(row),
        "opened": row.opens,
        "clicked": row.clicks,
        "last": row.last,
    }


def spreadsheet_safe(value: object) -> str:
    """The cell as text a spreadsheet shows and never runs: a leading formula sign gets a quote before it."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


async def _campaign_for(request: Request, session: Any, brand: uuid.UUID, campaign: uuid.UUID) -> tuple[Any, Any]:
    """The signed-in user and the campaign, if it is live, of this brand and the user's; the user is None
    without a session, and NotFound is raised as the API raises it."""
    user = await signed_in(request, session)
    if user is None:
        return None, None
    row = await reads.visible_campaign(await driver_connection(session), campaign, user)
    if row.brand != brand:
        raise NotFound("no such campaign", field="id")
    return user, row


def _counters(figures: stats.CampaignStatsOut) -> list[dict[str, Any]]:
    # Read by the names EVENT_TYPES holds, which the type checker cannot follow into the TypedDict.
    counts = cast(dict[str, stats.EventCountOut], figures["counts"])
    rest = [t for t in EVENT_TYPES if t not in HEADLINE]
    return [
        {
            "name": t,
            "unique": counts[t]["unique"],
            "total": counts[t]["total"],
            "rate": rate(counts[t]["unique"], figures["sent"]),
            "headline": t in HEADLINE,
        }
        for t in (*HEADLINE, *rest)
    ]


@router.get("/brands/{brand}/campaigns/{campaign}")
async def campaign_report(
    request: Request,
    app: App,
    session: Session,
    brand: uuid.UUID,
    campaign: uuid.UUID,
    q: Annotated[str, Query(max_length=200)] = "",
    sort: Sort = "-clicked",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    try:
        user, row = await _campaign_for(request, session, brand, campaign)
    except NotFound:
        return not_found(request, app, user=await _me_or_none(request, session))
    if user is None:
        return redirect(SIGN_IN_PAGE)
    conn = await driver_connection(session)
    # The stats and the table page each take tens of ms on a large campaign: asked at once, on two
    # connections, the page waits for the slower of the two rather than for both. The stats go to the read
    # pool, whose kept generic plans serve them; the page is planned for this campaign on the session's.
    async with request.app.state.read_pool.connection() as stats_conn:
        figures, (people, matching) = await asyncio.gather(
            stats.campaign_stats(stats_conn, campaign, user),
            report.recipients_page(
                conn,
                campaign,
                order=sort,
                search=q.strip() or None,
                start=(page - 1) * PAGE_SIZE,
                limit=PAGE_SIZE,
            ),
        )
    pages = max(1, -(-matching // PAGE_SIZE))
    if page > pages:
        # Answered as a page number the list refuses is: a link past the end is a wrong link, not an empty page.
        raise BadRequest(f"there {'is 1 page' if pages == 1 else f'are {pages} pages'}", field="page")
    (sender,) = await reads.senders(conn, [row.from_]) or [None]
    series = buckets(figures["hourly"], row.executed_at)
    return render(
        "report.html",
        app.box,
        csrf_anchor(request),
        user=await user_row(session, user),
        brand=brand,
        campaign=row,
        campaign_status=progress(row),
        sender=sender,
        stats=figures,
        counters=_counters(figures),
        set_aside=figures["set_aside"],
        echo_seconds=ECHO_SECONDS,
        series=series,
        chart=chart(series),
        people=[_person(r) for r in people],
        matching=matching,
        q=q,
        sort=sort,
        sorts=SORTS,
        page=page,
        pages=pages,
    )


async def _me_or_none(request: Request, session: Any) -> Any:
    user = await signed_in(request, session)
    return None if user is None else await user_row(session, user)


@router.get("/brands/{brand}/campaigns/{campaign}/recipients.csv")
async def recipients_csv(
    request: Request,
    app: App,
    session: Session,
    brand: uuid.UUID,
    campaign: uuid.UUID,
    q: Annotated[str, Query(max_length=200)] = "",
    sort: Sort = "-clicked",
) -> Response:
    try:
        user, _ = await _campaign_for(request, session, brand, campaign)
    except NotFound:
        return not_found(request, app, user=await _me_or_none(request, session))
    if user is None:
        return redirect(SIGN_IN_PAGE)
    pool = request.app.state.read_pool
    search = q.strip() or None

    async def lines() -> AsyncIterator[str]:
        buffer = io.StringIO()
        out = csv.writer(buffer)
        out.writerow(["name", "address", "status", "opens", "clicks", "last_activity"])
        yield buffer.getvalue()
        # Its own connection: the request's session ends when the handler returns, before the body is sent.
        async with pool.connection() as conn:
            async for batch in report.recipients_batches(conn, campaign, order=sort, search=search, batch=EXPORT_BATCH):
                buffer.seek(0)
                buffer.truncate()
                for row in batch:
                    person = _person(row)
                    last = person["last"]
                    out.writerow(
                        [
                            spreadsheet_safe(person["name"]),
                            spreadsheet_safe(person["address"]),
                            person["status"],
                            person["opened"],
                            person["clicked"],
                            last.isoformat() if last else "",
                        ]
                    )
                yield buffer.getvalue()

    headers = {"Content-Disposition": f'attachment; filename="campaign-{campaign}-recipients.csv"'}
    return guarded(StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers))
