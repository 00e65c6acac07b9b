"""The workspace's mailboxes page: connect Gmail or Outlook through the bound consent flow, and disconnect.

Beside the other connection tests, whose provider stand-in (tests/crm/conftest.py) it uses.
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.oauth_connect import auth_url, come_back, consent, grant_code, stored
from tests.support.oauth_server import FakeOAuth
from tests.support.workspace import browser, csrf_of, signed_in
from tests.support.world import World

KINDS = pytest.mark.parametrize("kind", ["google", "microsoft"])
DISCONNECT = re.compile(r'action="(/app/brands/[^"]+/disconnect)"')


@KINDS
async def test_a_mailbox_is_connected_from_the_page_listed_and_disconnected(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession, kind: str
) -> None:
    ann = await mailroom.brand_admin()
    async with browser(oauth_app) as web:
        await signed_in(web, oauth_app, ann.user)
        page = await web.get(f"/app/brands/{ann.brand}/mailboxes")
        assert page.status_code == 200 and "No mailbox connected" in page.text
        started = await web.get(f"/app/brands/{ann.brand}/mailboxes/connect/{kind}")
        assert started.status_code == 303
        query = consent(started.headers["location"])
        assert "mail.send" in query["scope"] or "Mail.Send" in query["scope"]
        code = grant_code(provider, kind, query, ["profile", "mail.send"], "ann.lee@example.com")
        connected = await come_back(web, kind, code=code, state=query["state"])
        # Back on the page the consent started from, which says it worked and lists the mailbox.
        assert connected.status_code == 303, connected.text
        assert connected.headers["location"] == f"/app/brands/{ann.brand}/mailboxes?connected={kind}"
        page = await web.get(connected.headers["location"])
        assert "ann.lee@example.com" in page.text and "mailbox is connected" in page.text
        (action,) = DISCONNECT.findall(page.text)
        assert (await web.post(action)).status_code == 403  # without its CSRF token: nothing happens
        assert [row.deleted_at for row in await stored(session, kind)] == [None]
        assert (await web.post(action, data={"csrf": csrf_of(page)})).status_code == 303
        assert "No mailbox connected" in (await web.get(f"/app/brands/{ann.brand}/mailboxes")).text
    (row,) = await stored(session, kind)
    assert row.user == ann.user and row.deleted_at is not None


async def test_another_users_mailbox_and_another_brands_page_are_not_found(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession
) -> None:
    ann = await mailroom.brand_admin()
    bob = await mailroom.brand_admin()
    async with browser(oauth_app) as web:
        await signed_in(web, oauth_app, bob.user)
        query = consent((await web.get(f"/app/brands/{bob.brand}/mailboxes/connect/google")).headers["location"])
        code = grant_code(provider, "google", query, ["profile", "mail.send"], "bob@example.com")
        assert (await come_back(web, "google", code=code, state=query["state"])).status_code == 303
    (bobs,) = await stored(session, "google")
    async with browser(oauth_app) as web:
        await signed_in(web, oauth_app, ann.user)
        page = await web.get(f"/app/brands/{ann.brand}/mailboxes")
        assert "bob@example.com" not in page.text
        assert (await web.get(f"/app/brands/{bob.brand}/mailboxes")).status_code == 404
        assert (await web.get(f"/app/brands/{bob.brand}/mailboxes/connect/google")).status_code == 404
        refused = await web.post(
            f"/app/brands/{ann.brand}/mailboxes/google/{bobs.id}/disconnect", data={"csrf": csrf_of(page)}
        )
        assert refused.status_code == 404
    (still,) = await stored(session, "google")
    assert still.deleted_at is None


async def test_a_provider_not_configured_is_named_on_the_page(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        answer = await web.get(f"/app/brands/{ann.brand}/mailboxes/connect/google")
    assert (
        answer.status_code == 400
        and "google_client_id: is not set: Google mailboxes cannot be connected" in answer.text
    )


@KINDS
async def test_a_declined_consent_comes_back_to_the_page_and_an_api_consent_never_does(
    mailroom: World, provider: FakeOAuth, oauth_app: FastAPI, session: AsyncSession, kind: str
) -> None:
    ann = await mailroom.brand_admin()
    async with browser(oauth_app) as web:
        await signed_in(web, oauth_app, ann.user)
        started = await web.get(f"/app/brands/{ann.brand}/mailboxes/connect/{kind}")
        declined = await come_back(
            web, kind, error="access_denied", state=consent(started.headers["location"])["state"]
        )
        assert declined.headers["location"] == f"/app/brands/{ann.brand}/mailboxes?declined={kind}"
        assert "nothing was stored" in (await web.get(declined.headers["location"])).text
        # A consent asked for through the API hands its answer to the app's window, even in a browser signed
        # in to the workspace as the same user; a state whose sealed brand was tampered with is not ours.
        query = await auth_url(ann, kind)
        code = grant_code(provider, kind, query, ["profile", "mail.send"], "ann.lee@example.com")
        through_api = await come_back(web, kind, code=code, state=query["state"])
        assert through_api.status_code == 200 and "is connected" in through_api.text
        forged = await come_back(web, kind, error="access_denied", state=query["state"] + "x")
        assert forged.status_code == 400
    assert [row.email for row in await stored(session, kind)] == ["ann.lee@example.com"]
