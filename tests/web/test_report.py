"""A campaign's report in the workspace: every number as GET /emails/:id/stats answers it, links, failures,
the recipients table (clickers first, searched, sorted, paged), its CSV export, 404s and escaping."""

from __future__ import annotations

import csv
import html
import io
import re
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from markupsafe import escape
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from tests.support.campaigns import mailgun, schedule
from tests.support.events import event, post_events, settle_all, signed, use_signing_key
from tests.support.mailgun_server import mailgun_server
from tests.support.sender import running_worker, wait_until_sent
from tests.support.workspace import browser, signed_in
from tests.support.world import Actor, World

HOUR = 3600.0
SUBJECT_PROBE = "<script>alert('subject')</script> & news"
NAME_PROBE = "<img src=x onerror=alert(1)>"
LINK_PROBE = "https://example.com/a?x=\"><script>alert('link')</script>"
ANN, BOB, CY, DAN, EVE = "ann@example.com", "bob@example.com", "cy@example.com", "dan@other.org", "eve@other.org"


@pytest.fixture(autouse=True)
def _signing_key(app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    use_signing_key(app, settings, monkeypatch)


async def sent_to_contacts(world: World, actor: Actor, app: FastAPI, settings: Settings) -> tuple[str, str]:
    """A campaign to five contacts (one named with markup), sent by a real worker through the Mailgun fake;
    its id and the message id its events name."""
    names = {ANN: ("Ann", "Archer"), BOB: ("Bob", NAME_PROBE), CY: ("=cmd|' /C calc'!A0", ""), DAN: ("Dan", "Dale")}
    recipients = []
    for address in (ANN, BOB, CY, DAN, EVE):
        first, last = names.get(address, ("", ""))
        fields = {"first_name": first, "last_name": last} if first else {}
        made = await world.contact(actor, address, **fields)
        recipients.append({"recipient_type": "Contact", "contact": made["id"]})
    campaign = await schedule(actor, path="/emails/individual", to=recipients, subject=SUBJECT_PROBE)
    with mailgun_server() as fake:
        async with running_worker(settings, **mailgun(settings, fake)):
            await wait_until_sent(app.state.sessionmaker, campaign["id"])
    async with app.state.sessionmaker() as s:
        found = await s.execute(
            text("SELECT DISTINCT esp_message_id FROM emails WHERE campaign = :c"), {"c": campaign["id"]}
        )
        (message_id,) = found.scalars().all()
    return campaign["id"], message_id.strip("<>")


async def seeded_report(world: World, app: FastAPI, settings: Settings) -> tuple[Actor, str]:
    ann = await world.brand_admin()
    campaign, mid = await sent_to_contacts(world, ann, app, settings)
    a, b = "https://example.com/a", LINK_PROBE
    calls = [signed(event("delivered", mid, who)) for who in (ANN, BOB, DAN)] + [
        signed(event("opened", mid, ANN, after=HOUR)),
        signed(event("opened", mid, ANN, after=2 * HOUR)),
        signed(event("opened", mid, DAN, after=3 * 86400)),  # the fourth day: a daily bucket
        signed(event("opened", mid, BOB, after=2 * HOUR, user_agent="Mozilla/5.0")),  # an image proxy's
        signed(event("clicked", mid, BOB, after=2 * HOUR, url=a)),
        signed(event("clicked", mid, BOB, after=2 * HOUR + 9, url=b)),
        signed(event("clicked", mid, ANN, after=2 * HOUR + 30, url=a)),
        signed(event("clicked", mid, BOB, after=2 * HOUR + 60, url=a)),
    ]
    for who, severity, message in ((CY, "permanent", "5.1.1 No such user"), (EVE, "temporary", "4.2.2 Mailbox full")):
        failed = event("failed", mid, who, severity=severity)
        failed["delivery-status"] = {"message": message}
        calls.append(signed(failed))
    assert (await post_events(world.client, *calls)).status_code == 200
    await settle_all(app.state.sessionmaker)
    return ann, campaign


def shown_stats(page: str) -> dict[str, int | None]:
    """Every number the page marks with the stats field it shows (``data-stat``), by that field."""
    found: dict[str, int | None] = {}
    for key, value in re.findall(r'data-stat="([^"]+)">([^<]*)<', page):
        number = None if value == "–" else int(value.replace(",", ""))
        assert found.setdefault(key, number) == number, key  # shown twice, the same both times
    return found


def stat_of(stats: dict[str, Any], key: str) -> Any:
    value: Any = stats
    for part in key.split("."):
        value = value[part]
    return value


def rows_of(page: str, table: str) -> list[list[str]]:
    body = page.split(f'id="{table}"')[1].split("</table>")[0].split("<tbody>")[1]
    return [
        [
            html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


async def test_every_number_on_the_report_is_the_stats_endpoints(
    world: World, app: FastAPI, settings: Settings
) -> None:
    ann, campaign = await seeded_report(world, app, settings)
    stats = ann.data(await ann.get(f"/emails/{campaign}/stats"))
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        listed = (await web.get(f"/app/brands/{ann.brand}/campaigns")).text
        assert f'href="/app/brands/{ann.brand}/campaigns/{campaign}"' in listed
        response = await web.get(f"/app/brands/{ann.brand}/campaigns/{campaign}")
    assert response.status_code == 200
    page = response.text
    shown = shown_stats(page)
    # Every counter both ways, the set-aside hits, the recipients and the emails sent.
    assert len(shown) == 2 * len(stats["counts"]) + 6
    for key, number in shown.items():
        assert number == stat_of(stats, key), key
    assert stats["counts"]["clicked"]["unique"] == 2 and stats["set_aside"]["image_proxy"]["opened"] == 1
    # Rates are of the emails sent: 2 of 5 clicked.
    assert "40.0%" in page.split("card-clicked")[1].split("</li>")[0]
    assert rows_of(page, "links") == [[x["url"], str(x["unique"]), str(x["total"])] for x in stats["links"]]
    assert rows_of(page, "links")[1] == [LINK_PROBE, "1", "1"]
    assert rows_of(page, "failure-reasons") == [
        [f["reason"], str(f["recipients"])] for f in stats["failures"]["by_reason"]
    ]
    assert rows_of(page, "failure-domains") == [
        [f["domain"], str(f["recipients"])] for f in stats["failures"]["by_domain"]
    ]
    # Opens and clicks over time: the hours, then the fourth day; the chart and its table hold the same sums.
    assert "day 4" in page and "+0h" in page and "<svg" in page
    hours = [(h["opened"], h["clicked"]) for h in stats["hourly"]]
    assert sum(o for o, _ in hours) == stats["counts"]["opened"]["total"] - 1  # the proxy's open is set aside


async def test_the_recipients_table_puts_clickers_first_and_is_searched_sorted_and_paged(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    ann, campaign = await seeded_report(world, app, settings)
    base = f"/app/brands/{ann.brand}/campaigns/{campaign}"
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        people = rows_of((await web.get(base)).text, "people")
        # Those who clicked first, then in the order they were sent to.
        assert [row[1] for row in people] == [ANN, BOB, CY, DAN, EVE]
        # Counted opens and clicks: Bob's open came through an image proxy.
        assert people[1][:5] == [f"Bob {NAME_PROBE}", BOB, "clicked", "0", "3"] and people[1][5] != "–"
        assert people[0][2:5] == ["clicked", "2", "1"]
        assert {row[1]: row[2] for row in people}[CY] == "failed"
        by_name = rows_of((await web.get(base, params={"sort": "full_name"})).text, "people")
        assert [row[1] for row in by_name][:3] == [CY, ANN, BOB]
        opens = rows_of((await web.get(base, params={"sort": "-opened"})).text, "people")
        assert [row[1] for row in opens][:2] == [ANN, DAN]
        assert [row[1] for row in rows_of((await web.get(base, params={"q": "OTHER.org"})).text, "people")] == [
            DAN,
            EVE,
        ]
        assert [row[1] for row in rows_of((await web.get(base, params={"q": "archer"})).text, "people")] == [ANN]
        assert "No recipient" in (await web.get(base, params={"q": "nobody"})).text
        assert (await web.get(base, params={"sort": "email_address; DROP TABLE"})).status_code == 400
        assert (await web.get(base, params={"page": 2})).status_code == 400
        assert (await web.get(base, params={"page": 0})).status_code == 400
    # Fifty a page: 120 more rows (no email yet: pending) make three pages.
    await session.execute(
        text(
            "INSERT INTO email_campaign_emails (campaign, seq, email_address, send_type) "
            "SELECT :c, 5 + n, 'more' || n || '@example.net', 'To' FROM generate_series(1, 120) n"
        ),
        {"c": campaign},
    )
    await session.commit()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        first, third = (await web.get(base)).text, (await web.get(base, params={"page": 3})).text
        assert len(rows_of(first, "people")) == 50 and "Page 1 of 3" in first and 'rel="next"' in first
        assert len(rows_of(third, "people")) == 25 and 'rel="prev"' in third
        assert (await web.get(base, params={"page": 4})).status_code == 400
        # Searched, the pages are those of the rows found: counted with the page, and apart past the last.
        found = (await web.get(base, params={"q": "MORE", "page": 3})).text
        assert len(rows_of(found, "people")) == 20 and "Page 3 of 3" in found
        past = await web.get(base, params={"q": "more", "page": 4})
        assert past.status_code == 400 and "there are 3 pages" in past.text


async def test_the_csv_export_streams_every_recipient_and_neutralises_formulas(
    world: World, app: FastAPI, settings: Settings
) -> None:
    ann, campaign = await seeded_report(world, app, settings)
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        response = await web.get(f"/app/brands/{ann.brand}/campaigns/{campaign}/recipients.csv")
        searched = await web.get(f"/app/brands/{ann.brand}/campaigns/{campaign}/recipients.csv", params={"q": "other"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["name", "address", "status", "opens", "clicks", "last_activity"]
    assert [row[1] for row in rows[1:]] == [ANN, BOB, CY, DAN, EVE]
    by_address = {row[1]: row for row in rows[1:]}
    # A name that starts like a formula is shown, not run.
    assert by_address[CY][0] == "'=cmd|' /C calc'!A0" and by_address[CY][2] == "failed"
    assert by_address[BOB][0] == f"Bob {NAME_PROBE}" and by_address[BOB][3:5] == ["0", "3"]
    assert [row[1] for row in csv.reader(io.StringIO(searched.text))][1:] == [DAN, EVE]


async def test_another_brands_or_a_deleted_campaign_answers_404_and_user_content_is_text(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    ann, campaign = await seeded_report(world, app, settings)
    other = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = (await web.get(f"/app/brands/{ann.brand}/campaigns/{campaign}")).text
        # The campaign under a brand it is not of, even one the user reaches.
        ann_team = ann.data(await ann.post("/brands", {"name": "Team", "parent": str(ann.brand)}))
        assert (await web.get(f"/app/brands/{ann_team['id']}/campaigns/{campaign}")).status_code == 404
        assert (await web.get(f"/app/brands/{ann.brand}/campaigns/{uuid.uuid4()}")).status_code == 404
    assert "<script>" not in page and "<img src=x" not in page
    assert str(escape(SUBJECT_PROBE)) in page and str(escape(NAME_PROBE)) in page
    # The link is text, never a link the page offers to follow.
    assert str(escape(LINK_PROBE)) in page
    assert 'href="https://example.com' not in page
    async with browser(app) as web:
        await signed_in(web, app, other.user)
        for path in ("", "/recipients.csv"):
            refused = await web.get(f"/app/brands/{ann.brand}/campaigns/{campaign}{path}")
            assert refused.status_code == 404 and "Not found" in refused.text
            assert (await web.get(f"/app/brands/{other.brand}/campaigns/{campaign}{path}")).status_code == 404
    await session.execute(text("UPDATE email_campaigns SET deleted_at = now() WHERE id = :c"), {"c": campaign})
    await session.commit()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        assert (await web.get(f"/app/brands/{ann.brand}/campaigns/{campaign}")).status_code == 404
        assert (await web.get(f"/app/brands/{ann.brand}/campaigns/{campaign}/recipients.csv")).status_code == 404
    async with browser(app) as anonymous:
        signed_out = await anonymous.get(f"/app/brands/{ann.brand}/campaigns/{campaign}")
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/app/sign-in"
