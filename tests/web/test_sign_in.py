"""Signing in to the workspace: a one-use, short-lived link, mailed or printed, confirmed by a click."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.crm.notices import SIGN_IN
from mailroom.links import redact_path
from mailroom.web.guard import SESSION_COOKIE
from mailroom.web.sign_in import new_link, session_hash
from tests.support.campaigns import campaign
from tests.support.keys import TEST_SECRET_KEY
from tests.support.sender import first_mail_over_smtp
from tests.support.workspace import browser, csrf_of, follow_link, link_path, printed_link, signed_in
from tests.support.world import World

MAILROOM = str(Path(sys.executable).with_name("mailroom"))


async def email_of(session: AsyncSession, user: uuid.UUID) -> str:
    return str((await session.execute(text("SELECT email FROM users WHERE id = :id"), {"id": user})).scalar_one())


async def count(session: AsyncSession, sql: str) -> int:
    return int((await session.execute(text(sql))).scalar_one())


async def test_a_mailed_link_signs_in_and_shows_the_brands_campaigns(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    ann = await world.brand_admin(first="Ann")
    ann.data(await ann.post("/emails", campaign(**{"from": str(ann.user), "subject": "Open house Sunday"})))
    email = await email_of(session, ann.user)
    async with browser(app) as web:
        assert (await web.get("/app/campaigns/elsewhere")).status_code == 404
        for start in ("/app", "/app/"):
            assert (await web.get(start, follow_redirects=False)).headers["location"] == "/app/sign-in"
        form = await web.get("/app/sign-in")
        assert form.status_code == 200 and 'for="email"' in form.text and str(settings.data_dir / "outbox") in form.text
        sent = await web.post("/app/sign-in", data={"email": email.upper(), "csrf": csrf_of(form)})
        assert sent.status_code == 200 and "outbox" in sent.text and str(settings.data_dir / "outbox") in sent.text
        server = await first_mail_over_smtp(settings)
        (message,) = server.messages
        assert message.rcpt_tos == [email] and "Subject: Sign in to mailroom" in message.raw.decode()
        path = link_path(message.raw.decode())
        # Opening the link (as a mail scanner would) signs nobody in; the button does.
        assert SESSION_COOKIE not in (await web.get(path)).cookies
        confirmed = await follow_link(web, path)
        assert confirmed.status_code == 303 and SESSION_COOKIE in confirmed.cookies
        home = await web.get("/app/")
        assert home.status_code == 303 and home.headers["location"] == f"/app/brands/{ann.brand}/campaigns"
        page = await web.get(home.headers["location"])
    assert page.status_code == 200 and "Open house Sunday" in page.text


async def test_an_address_without_an_account_gets_the_same_answer_and_no_mail(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    email = await email_of(session, ann.user)
    answers = []
    async with browser(app) as web:
        for address in (email, "nobody@example.com"):
            form = await web.get("/app/sign-in")
            answers.append(await web.post("/app/sign-in", data={"email": address, "csrf": csrf_of(form)}))
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].text.replace(email, "X") == answers[1].text.replace("nobody@example.com", "X")
    assert await count(session, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'mailroom.send_notice'") == 1


async def test_the_form_mails_at_most_three_live_links_to_one_address(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    email = await email_of(session, ann.user)
    async with browser(app) as web:
        form = await web.get("/app/sign-in")
        for _ in range(5):
            assert (await web.post("/app/sign-in", data={"email": email, "csrf": csrf_of(form)})).status_code == 200
        jobs = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'mailroom.send_notice'"
        assert await count(session, jobs) == 3
        # Once one expires (or is used), the form mails another.
        oldest = "SELECT id FROM sign_in_links ORDER BY created_at LIMIT 1"
        await session.execute(text(f"UPDATE sign_in_links SET expires_at = now() WHERE id = ({oldest})"))
        await session.commit()
        await web.post("/app/sign-in", data={"email": email, "csrf": csrf_of(await web.get("/app/sign-in"))})
    assert await count(session, jobs) == 4


def test_sign_in_links_are_kept_out_of_the_access_log() -> None:
    assert redact_path("/app/sign-in/abc-DEF_123") == "/app/sign-in/<redacted>"
    assert redact_path("/app/sign-in") == "/app/sign-in"


async def test_a_used_link_is_refused(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    path = await printed_link(app, ann.user)
    async with browser(app) as web:
        assert (await follow_link(web, path)).status_code == 303
    async with browser(app) as other:
        again = await follow_link(other, path)
    assert again.status_code == 400 and SESSION_COOKIE not in again.cookies and "has been used" in again.text


async def test_an_expired_link_is_refused(world: World, app: FastAPI, session: AsyncSession) -> None:
    ann = await world.brand_admin()
    path = await printed_link(app, ann.user)
    await session.execute(text("UPDATE sign_in_links SET expires_at = now() - interval '1 second'"))
    await session.commit()
    async with browser(app) as web:
        refused = await follow_link(web, path)
    assert refused.status_code == 400 and SESSION_COOKIE not in refused.cookies
    assert await count(session, "SELECT count(*) FROM web_sessions") == 0


async def assert_refused(app: FastAPI, token: str) -> None:
    """The link's page and its button both refuse the token, and no browser is signed in."""
    async with browser(app) as web:
        assert (await web.get(f"/app/sign-in/{token}")).status_code == 400
        form = await web.get("/app/sign-in")
        refused = await web.post(f"/app/sign-in/{token}", data={"csrf": csrf_of(form)})
    assert refused.status_code == 400 and SESSION_COOKIE not in refused.cookies


async def test_a_link_whose_sealed_token_has_expired_is_refused(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with app.state.sessionmaker() as session, session.begin():
        link = await new_link(session, ann.user)
    # The row would still take it; the token itself says it is past its 15 minutes.
    token = app.state.secret_box.seal(SIGN_IN, {"link": str(link)}, ttl=-1)
    await assert_refused(app, token)


async def test_a_deleted_user_is_signed_out_and_their_links_stop_working(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    unused = await printed_link(app, ann.user)
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = f"/app/brands/{ann.brand}/campaigns"
        assert (await web.get(page)).status_code == 200
        await session.execute(text("UPDATE users SET deleted_at = now() WHERE id = :id"), {"id": ann.user})
        await session.commit()
        assert (await web.get(page)).headers.get("location") == "/app/sign-in"
    async with browser(app) as web:
        assert (await follow_link(web, unused)).status_code == 400


async def test_a_forged_link_is_refused(app: FastAPI) -> None:
    await assert_refused(app, "not-a-token")
    await assert_refused(app, app.state.secret_box.seal("email-confirmation", {"link": str(uuid.uuid4())}, ttl=60))


async def test_forms_posted_without_their_csrf_token_are_refused_and_change_nothing(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    email = await email_of(session, ann.user)
    path = await printed_link(app, ann.user)
    async with browser(app) as web:
        await web.get(path)
        for wrong in ({}, {"csrf": "forged"}):
            assert (await web.post(path, data=wrong)).status_code == 403
            assert (await web.post("/app/sign-in", data={"email": email, **wrong})).status_code == 403
        assert await count(session, "SELECT count(*) FROM sign_in_links WHERE used_at IS NOT NULL") == 0
        assert await count(session, "SELECT count(*) FROM procrastinate_jobs") == 0
        # The link still works, and the signed-in browser's sign-out needs its token too.
        assert (await follow_link(web, path)).status_code == 303
        page = await web.get(f"/app/brands/{ann.brand}/campaigns")
        assert (await web.post("/app/sign-out", data={})).status_code == 403
        assert (await web.post("/app/sign-out", data={"csrf": "forged"})).status_code == 403
        assert await count(session, "SELECT count(*) FROM web_sessions") == 1
        # A token made for the sign-in form (before the session) is no token for the session's forms.
        session_id = web.cookies[SESSION_COOKIE]
        web.cookies.delete(SESSION_COOKIE)
        pre_session = csrf_of(await web.get("/app/sign-in"))
        web.cookies.set(SESSION_COOKIE, session_id, domain="mailroom.test")
        assert (await web.post("/app/sign-out", data={"csrf": pre_session})).status_code == 403
        signed_out = await web.post("/app/sign-out", data={"csrf": csrf_of(page)})
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/app/sign-in"
        assert await count(session, "SELECT count(*) FROM web_sessions") == 0
        after = await web.get(f"/app/brands/{ann.brand}/campaigns")
    assert after.status_code == 303 and after.headers["location"] == "/app/sign-in"


async def test_only_a_hash_of_the_session_id_is_stored(world: World, app: FastAPI, session: AsyncSession) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        session_id = web.cookies[SESSION_COOKIE]
    (stored,) = (await session.execute(text("SELECT id_hash FROM web_sessions"))).scalars()
    assert stored == session_hash(session_id) and session_id.encode() not in stored


async def test_signing_in_again_ends_the_browsers_earlier_session(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    bob = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        await signed_in(web, app, bob.user)
        assert (await web.get(f"/app/brands/{bob.brand}/campaigns")).status_code == 200
        assert (await web.get(f"/app/brands/{ann.brand}/campaigns")).status_code == 404
    (user,) = (await session.execute(text('SELECT "user" FROM web_sessions'))).scalars()
    assert user == bob.user


async def test_a_session_idle_for_14_days_has_ended(world: World, app: FastAPI, session: AsyncSession) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = f"/app/brands/{ann.brand}/campaigns"
        # A visit within a minute of the last writes nothing: last_seen_at is kept to the minute.
        await session.execute(text("UPDATE web_sessions SET last_seen_at = now() - interval '30 seconds'"))
        await session.commit()
        assert (await web.get(page)).status_code == 200
        recent = "SELECT count(*) FROM web_sessions WHERE last_seen_at > now() - interval '20 seconds'"
        assert await count(session, recent) == 0
        await session.execute(text("UPDATE web_sessions SET last_seen_at = now() - interval '13 days 23 hours'"))
        await session.commit()
        assert (await web.get(page)).status_code == 200
        # That visit moved the idle deadline on: the session is fresh again.
        fresh = await count(session, "SELECT count(*) FROM web_sessions WHERE last_seen_at > now() - interval '1 hour'")
        assert fresh == 1
        await session.execute(text("UPDATE web_sessions SET last_seen_at = now() - interval '14 days 1 minute'"))
        await session.commit()
        assert (await web.get(page)).headers.get("location") == "/app/sign-in"


def cookie_flags(response: httpx.Response, name: str) -> set[str]:
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")]
    return {part.strip().lower() for part in header.split(";")[1:]}


async def test_the_session_cookie_is_httponly_lax_and_secure_only_over_https(
    world: World, app: FastAPI, settings: Settings
) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        confirmed = await follow_link(web, await printed_link(app, ann.user))
    flags = cookie_flags(confirmed, SESSION_COOKIE)
    assert {"httponly", "samesite=lax", "path=/"} <= flags and "secure" not in flags
    app.state.settings = settings.model_copy(update={"public_url": "https://mail.example.com"})
    try:
        async with browser(app, "https://mailroom.test") as web:
            confirmed = await follow_link(web, await printed_link(app, ann.user))
    finally:
        app.state.settings = settings
    flags = cookie_flags(confirmed, SESSION_COOKIE)
    assert {"httponly", "samesite=lax", "secure"} <= flags


def login_link(settings: Settings, email: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MAILROOM_DATABASE_URL": str(settings.database_url),
        "MAILROOM_DATA_DIR": str(settings.data_dir),
        "MAILROOM_SECRET_KEY": TEST_SECRET_KEY,
        "MAILROOM_PUBLIC_URL": settings.public_url,
    }
    command = [MAILROOM, "login-link", "--email", email]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_login_link_prints_a_link_that_signs_in(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    ann = await world.brand_admin()
    done = login_link(settings, (await email_of(session, ann.user)).upper())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(settings.public_url + "/app/sign-in/")
    async with browser(app) as web:
        assert (await follow_link(web, link_path(done.stdout))).status_code == 303
    unknown = login_link(settings, "nobody@example.com")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no user has the address nobody@example.com"
