"""A brand's campaigns in the workspace: only the user's brands, newest first, paged, searchable, escaped."""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.web.guard import SESSION_COOKIE
from tests.support.campaigns import campaign
from tests.support.workspace import browser, signed_in
from tests.support.world import Actor, World

# Every address a page makes the browser load or go to.
REFERENCES = re.compile(r'\b(?:src|href|action)="([^"]*)"')


async def add_campaigns(
    session: AsyncSession, actor: Actor, subjects: list[str], *, age: int = 0, **columns: object
) -> None:
    """Campaign rows written straight to the table, the last made ``age`` seconds ago and each before it a
    second earlier: the list reads them as it reads the API's."""
    names = "".join(f", {name}" for name in columns)
    values = "".join(f", :{name}" for name in columns)
    for n, subject in enumerate(subjects):
        await session.execute(
            text(
                f'INSERT INTO email_campaigns (created_by, brand, "from", subject, created_at{names}) '
                f"VALUES (:user, :brand, :user, :subject, now() - make_interval(secs => :age){values})"
            ),
            {"user": actor.user, "brand": actor.brand, "subject": subject, "age": age + len(subjects) - n, **columns},
        )
    await session.commit()


def subjects_on(page: str) -> list[str]:
    # Each subject is the link to its campaign's report.
    return re.findall(r'<th scope="row" class="subject"><a href="[^"]+">(.*?)</a></th>', page)


async def test_another_brands_list_answers_404_and_a_signed_out_browser_goes_to_sign_in(
    world: World, app: FastAPI
) -> None:
    ann = await world.brand_admin()
    other = await world.brand_admin()
    async with browser(app) as web:
        anonymous = await web.get(f"/app/brands/{ann.brand}/campaigns")
        assert anonymous.status_code == 303 and anonymous.headers["location"] == "/app/sign-in"
        await signed_in(web, app, ann.user)
        assert (await web.get(f"/app/brands/{ann.brand}/campaigns")).status_code == 200
        refused = await web.get(f"/app/brands/{other.brand}/campaigns")
        assert refused.status_code == 404 and "Not found" in refused.text
        assert (await web.get(f"/app/brands/{uuid.uuid4()}/campaigns")).status_code == 404
        # The bearer token of the other brand's Admin does not count here: only the session does.
        with_token = await web.get(
            f"/app/brands/{other.brand}/campaigns", headers={"Authorization": f"Bearer {other.token}"}
        )
        assert with_token.status_code == 404


async def test_the_list_shows_status_times_recipients_and_rates_newest_first(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    ann.data(await ann.post("/emails", campaign(**{"from": str(ann.user), "subject": "Scheduled one"})))
    await add_campaigns(session, ann, ["Draft one"], age=40)
    sent = {"due_at": "2030-01-01T10:00:00Z", "executed_at": "2030-01-01T10:00:05Z", "recipients_count": 4}
    await add_campaigns(session, ann, ["Sending one"], age=30, **sent, sent=2)
    await add_campaigns(session, ann, ["Sent one"], age=20, **sent, sent=4, delivered=3, opened=2, clicked=1)
    await add_campaigns(session, ann, ["Failed one"], age=10, **sent, failed_at="2030-01-01T10:00:06Z")
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = (await web.get(f"/app/brands/{ann.brand}/campaigns")).text
    assert subjects_on(page) == ["Scheduled one", "Failed one", "Sent one", "Sending one", "Draft one"]
    statuses = re.findall(r'class="status status-(\w+)"', page)
    assert statuses == ["scheduled", "failed", "sent", "sending", "draft"]
    sent_row = page.split("Sent one")[1].split("</tr>")[0]
    assert "2030-01-01 10:00 UTC" in sent_row and ">4<" in sent_row
    assert re.findall(r"[\d.]+%", sent_row) == ["75.0%", "50.0%", "25.0%"]
    assert "5 campaigns" in page


async def test_the_list_is_paged_by_50_and_searched_by_subject(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    await add_campaigns(session, ann, [f"Listing {n:02}" for n in range(52)] + ["100% off_season"])
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        base = f"/app/brands/{ann.brand}/campaigns"
        first = (await web.get(base)).text
        second = (await web.get(base, params={"page": 2})).text
        assert len(subjects_on(first)) == 50 and subjects_on(first)[:2] == ["100% off_season", "Listing 51"]
        assert subjects_on(second) == ["Listing 02", "Listing 01", "Listing 00"] and "Page 2 of 2" in second
        assert 'rel="next"' in first and 'rel="prev"' in second
        found = (await web.get(base, params={"q": "listing 1"})).text
        assert subjects_on(found) == [f"Listing {n}" for n in range(19, 9, -1)]
        # % and _ are letters to look for, not wildcards.
        assert subjects_on((await web.get(base, params={"q": "0% off_"})).text) == ["100% off_season"]
        assert subjects_on((await web.get(base, params={"q": "_"})).text) == ["100% off_season"]
        assert "No campaign" in (await web.get(base, params={"q": "nothing like it"})).text


async def test_the_brand_switcher_offers_the_users_brands_and_their_teams_only(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin(brand_name="Bay Brokerage")
    team = ann.data(await ann.post("/brands", {"name": "Bay Team", "parent": str(ann.brand)}))
    await world.brand_admin(brand_name="Harbor Homes")
    await add_campaigns(session, Actor(uuid.UUID(team["id"]), ann.user, ann.token, ann.client), ["Team news"])
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = (await web.get(f"/app/brands/{ann.brand}/campaigns")).text
        options = re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', page)
        assert options == [(str(ann.brand), "Bay Brokerage"), (team["id"], "Bay Team")]
        switched = await web.get("/app/brands", params={"brand": team["id"]})
        assert switched.status_code == 303
        assert subjects_on((await web.get(switched.headers["location"])).text) == ["Team news"]


async def test_subjects_and_names_with_markup_are_shown_as_text(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin(brand_name="<i>Acme</i> & Co")
    await session.execute(
        text("UPDATE users SET display_name = '<b onclick=x()>Ann</b>' WHERE id = :id"), {"id": ann.user}
    )
    await session.commit()
    probe = "<script>alert(1)</script>"
    ann.data(await ann.post("/emails", campaign(**{"from": str(ann.user), "subject": probe})))
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = (await web.get(f"/app/brands/{ann.brand}/campaigns", params={"q": '"><script>'})).text
        page += (await web.get(f"/app/brands/{ann.brand}/campaigns")).text
    assert "<script" not in page and "<b " not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b onclick=x()&gt;Ann&lt;/b&gt;" in page and "&lt;i&gt;Acme&lt;/i&gt; &amp; Co" in page
    assert 'value="&#34;&gt;&lt;script&gt;"' in page


async def test_every_page_has_a_strict_policy_and_loads_nothing_from_another_origin(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        pages = [await web.get("/app/sign-in")]
        await signed_in(web, app, ann.user)
        pages += [
            await web.get(f"/app/brands/{ann.brand}/campaigns"),
            await web.get(f"/app/brands/{uuid.uuid4()}/campaigns"),
        ]
        pages += [await web.get("/app/", follow_redirects=False), await web.get("/app/no/such/page")]
        pages += [await web.get("/app/static/app.css")]
        assert pages[-2].status_code == 404 and "Not found" in pages[-2].text
        assert SESSION_COOKIE in web.cookies
    for page in pages:
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert page.headers["referrer-policy"] == "no-referrer"
        for reference in REFERENCES.findall(page.text):
            assert reference.startswith(("/", "?", "#")) and not reference.startswith("//"), reference
        assert "style=" not in page.text and "<script" not in page.text
    assert pages[-1].headers["content-type"].startswith("text/css")


async def test_a_page_number_search_or_file_out_of_bounds_is_refused(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        base = f"/app/brands/{ann.brand}/campaigns"
        for params in ({"page": 0}, {"page": "x"}, {"q": "x" * 201}):
            assert (await web.get(base, params=params)).status_code == 400, params
        assert (await web.get(base, params={"q": "x" * 200, "page": 3})).status_code == 200
        for name in ("nope.css", "..%2Fpages.py", "__init__.py"):
            assert (await web.get(f"/app/static/{name}")).status_code == 404, name
