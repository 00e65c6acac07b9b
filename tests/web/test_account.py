"""The account page: the browsers signed in as the user (each can be ended) and the user's API tokens."""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI

from mailroom.crm.tokens import HINT_LENGTH
from mailroom.web.guard import SESSION_COOKIE
from mailroom.web.sign_in import session_handle
from tests.support.workspace import browser, csrf_of, signed_in
from tests.support.world import World

ENDS = re.compile(r'name="session" value="([0-9a-f]+)"')
NEW_TOKEN = re.compile(r'<code class="token">([^<]+)</code>')
REVOKE = re.compile(r'action="/app/account/tokens/([0-9a-f-]+)/revoke"')


async def test_a_token_made_on_the_page_is_shown_once_works_and_stops_when_revoked(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = await web.get("/app/account")
        made = await web.post(
            "/app/account/tokens", data={"csrf": csrf_of(page), "name": "CRM sync", "expires_in_days": "30"}
        )
        assert made.status_code == 200, made.text
        found = NEW_TOKEN.search(made.text)
        assert found is not None and "CRM sync" in made.text
        token = found.group(1)
        # Never again: the page shows the token's first characters only.
        again = await web.get("/app/account")
        assert token not in again.text and f"{token[:HINT_LENGTH]}…" in again.text

        api = {"Authorization": f"Bearer {token}"}
        listed = await world.client.get("/users/self/tokens", headers=api)
        assert listed.status_code == 200
        ours = next(t for t in listed.json()["data"] if t["name"] == "CRM sync")
        assert abs(ours["expires_at"] - ours["created_at"] - 30 * 86400) < 60

        (token_id,) = [i for i in REVOKE.findall(again.text) if i == ours["id"]]
        revoked = await web.post(f"/app/account/tokens/{token_id}/revoke", data={"csrf": csrf_of(again)})
        assert revoked.status_code == 303
        assert (await world.client.get("/users/self/tokens", headers=api)).status_code == 401
        assert "Revoked" in (await web.get("/app/account")).text


async def test_a_bad_expiry_is_named_and_makes_no_token(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = await web.get("/app/account")
        for days, message in (("0", "expires_in_days"), ("soon", "expires_in_days: must be a whole number")):
            refused = await web.post(
                "/app/account/tokens", data={"csrf": csrf_of(page), "name": "x", "expires_in_days": days}
            )
            assert refused.status_code == 400 and message in refused.text
            assert f'value="{days}"' in refused.text  # what was typed stays in the form
    tokens = ann.data(await ann.get("/users/self/tokens"))
    assert [t["name"] for t in tokens] == [None]  # only the one bootstrap made


async def test_another_users_token_and_a_form_without_its_csrf_token_change_nothing(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    bob = await world.brand_admin()
    (bobs,) = bob.data(await bob.get("/users/self/tokens"))
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = await web.get("/app/account")
        other = await web.post(f"/app/account/tokens/{bobs['id']}/revoke", data={"csrf": csrf_of(page)})
        assert other.status_code == 404
        assert (await web.post("/app/account/tokens", data={"name": "forged"})).status_code == 403
        (annes,) = ann.data(await ann.get("/users/self/tokens"))
        forged = await web.post(f"/app/account/tokens/{annes['id']}/revoke", data={"csrf": "x" + csrf_of(page)})
        assert forged.status_code == 403
    assert (await bob.get("/users/self/tokens")).status_code == 200
    assert [t["name"] for t in ann.data(await ann.get("/users/self/tokens"))] == [None]
    assert (await ann.get("/users/self/tokens")).status_code == 200  # not revoked by the forged form


async def test_a_token_name_with_markup_is_shown_as_text(world: World, app: FastAPI) -> None:
    ann = await world.brand_admin()
    async with browser(app) as web:
        await signed_in(web, app, ann.user)
        page = await web.get("/app/account")
        made = await web.post("/app/account/tokens", data={"csrf": csrf_of(page), "name": "<script>alert(1)</script>"})
    assert "<script>alert(1)</script>" not in made.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in made.text


async def test_another_browser_can_be_signed_out_from_the_page_but_not_someone_elses(
    world: World, app: FastAPI
) -> None:
    ann = await world.brand_admin()
    bob = await world.brand_admin()
    async with browser(app) as laptop, browser(app) as phone, browser(app) as bobs:
        await signed_in(laptop, app, ann.user)
        await signed_in(phone, app, ann.user)
        await signed_in(bobs, app, bob.user)
        bob_handle = session_handle(bobs.cookies[SESSION_COOKIE])
        page = await laptop.get("/app/account")
        assert page.text.count("This browser") == 1 and page.text.count("Another browser") == 1
        (phone_handle,) = ENDS.findall(page.text)  # this browser has no button: sign out does that

        refused = await laptop.post("/app/account/sessions/end", data={"csrf": csrf_of(page), "session": bob_handle})
        assert refused.status_code == 404
        assert (await bobs.get("/app/account")).status_code == 200

        without = await laptop.post("/app/account/sessions/end", data={"session": phone_handle})
        assert without.status_code == 403
        assert (await phone.get("/app/account")).status_code == 200

        ended = await laptop.post("/app/account/sessions/end", data={"csrf": csrf_of(page), "session": phone_handle})
        assert ended.status_code == 303
        gone = await phone.get("/app/account")
        assert gone.status_code == 303 and gone.headers["location"] == "/app/sign-in"
        assert (await laptop.get("/app/account")).status_code == 200


async def test_a_signed_out_browser_is_sent_to_sign_in(app: FastAPI) -> None:
    async with browser(app) as web:
        for answer in (
            await web.get("/app/account"),
            await web.post("/app/account/tokens", data={"name": "x"}),
            await web.post(f"/app/account/tokens/{uuid.uuid4()}/revoke"),
        ):
            assert answer.status_code == 303 and answer.headers["location"] == "/app/sign-in"
