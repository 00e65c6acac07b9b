"""Every CRM, token, credential and mailbox answer is the shape its route declares.

Each 2xx JSON answer is validated, strictly, against the route's `response_model`: the shapes are closed, so a
key the document does not declare fails as surely as a missing one. The answers whose keys vary (a user's role,
a member's real record against an invitee's stand-in) are each reached. Answers without a body document none.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from mailroom.api import crm, mailbox_actions, mailboxes
from tests.support.oauth_connect import auth_url, finish, grant_code
from tests.support.oauth_server import FakeOAuth
from tests.support.world import Actor, World

ROUTES = [route for module in (crm, mailboxes, mailbox_actions) for route in module.router.routes]


def declared(method: str, template: str) -> TypeAdapter[Any]:
    for route in ROUTES:
        if isinstance(route, APIRoute) and route.path_format == template and method in (route.methods or ()):
            assert route.response_model is not None, (method, template)
            return TypeAdapter(route.response_model)
    raise AssertionError(f"no route {method} {template}")


async def answer(actor: Actor, method: str, template: str, body: Any = None, *, params: Any = None, **path: Any) -> Any:
    """The data of a successful call, once its whole answer has been checked against the route's shape."""
    url = template.format(**path)
    response = await actor.client.request(method, url, json=body, params=params, headers=actor.headers)
    assert 200 <= response.status_code < 300, response.text
    declared(method, template).validate_json(response.content, strict=True)
    return response.json()["data"]


async def test_brand_user_and_invitation_answers(world: World) -> None:
    admin = await world.brand_admin()
    team = await answer(admin, "POST", "/brands", {"name": "Team", "parent": str(admin.brand)})
    assert team["parent"] == str(admin.brand)

    users = "/brands/{brand}/users"
    new = await answer(admin, "POST", users, {"email": "new@example.com", "first_name": "Nia"}, brand=admin.brand)
    assert new["role"] == "Agent" and new["email_confirmed"] is False
    # A member's role changed answers their stored record; another brand's user answers a stand-in.
    changed = await answer(admin, "POST", users, {"email": "new@example.com", "role": "Admin"}, brand=admin.brand)
    assert changed["id"] == new["id"] and changed["role"] == "Admin"
    other = await world.brand_admin()
    elsewhere = await world.member(other, email="dan@example.com")
    stand_in = await answer(admin, "POST", users, {"email": "dan@example.com"}, brand=admin.brand)
    assert stand_in["id"] != str(elsewhere.user)

    invitation = await answer(
        admin, "POST", "/brands/{brand}/invitations", {"email": "Dan@Example.com"}, brand=admin.brand
    )
    assert invitation["email"] == "dan@example.com" and isinstance(invitation["expires_at"], int)
    joined = await answer(elsewhere, "POST", "/invitations/{token}/accept", token=invitation["token"])
    assert joined == {
        "type": "brand_membership",
        "brand": str(admin.brand),
        "user": str(elsewhere.user),
        "role": "Agent",
    }


async def test_contact_list_and_agent_answers(world: World) -> None:
    actor = await world.brand_admin()
    contacts = "/brands/{brand}/contacts"
    created = await answer(
        actor, "POST", contacts, {"contacts": [{"emails": ["a@example.com"]}, {}]}, brand=actor.brand
    )
    assert [c["email"] for c in created] == ["a@example.com", None]

    csv = b"email,first_name,tags\nb@example.com,Bo,VIP\n"
    response = await actor.post(
        f"/brands/{actor.brand}/contacts/import", content=csv, headers={"Content-Type": "text/csv"}
    )
    declared("POST", "/brands/{brand}/contacts/import").validate_json(response.content, strict=True)

    listed = await answer(actor, "GET", contacts, brand=actor.brand)
    assert len(listed) == 3

    crm_list = await answer(actor, "POST", "/brands/{brand}/lists", {"name": "Buyers"}, brand=actor.brand)
    members = {"members": [created[0]["id"]]}
    grown = await answer(
        actor, "POST", "/brands/{brand}/lists/{list}/members", members, brand=actor.brand, list=crm_list["id"]
    )
    assert grown["members_count"] == 1
    await answer(actor, "POST", "/agents", {"email": "agent@mls.example.com", "mls_id": "M1"})


@pytest.mark.parametrize("kind", ["google", "microsoft"])
async def test_credential_and_token_answers(world: World, kind: str) -> None:
    actor = await world.brand_admin()
    body = {"email": "box@example.com", "scope_summary": ["profile", "mail.send"], "access_token": "access-x"}
    credential = await answer(actor, "POST", f"/users/self/{kind}-credentials", body)
    revoked = await answer(
        actor, "POST", f"/users/self/{kind}-credentials/{{credential}}/revoke", credential=credential["id"]
    )
    assert revoked["revoked"] is True and revoked["type"] == f"{kind}_credential"

    made = await answer(actor, "POST", "/users/self/tokens", {"name": "ci", "expires_in_days": 30})
    tokens = await answer(actor, "GET", "/users/self/tokens")
    assert made["token"].startswith(made["hint"])
    assert made["id"] in {t["id"] for t in tokens} and all("token" not in t for t in tokens)


@pytest.mark.parametrize("kind", ["google", "microsoft"])
async def test_mailbox_connection_answers(mailroom: World, provider: FakeOAuth, kind: str) -> None:
    actor = await mailroom.brand_admin()
    await answer(actor, "GET", f"/users/self/{kind}/auth-url", params={"scopes": "mail.send"})
    query = await auth_url(actor, kind, ["mail.send"])
    code = grant_code(provider, kind, query, ["profile", "mail.send"], "ann@example.com")
    response = await finish(actor, kind, code=code, state=query["state"])
    declared("POST", f"/users/self/{kind}/callback").validate_json(response.content, strict=True)


async def test_the_document_gives_every_json_answer_a_shape_and_bodiless_ones_none(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    queued = 0
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if not {"crm", "mailbox actions"} & set(operation.get("tags", [])):
                continue
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                content = response.get("content", {})
                if "application/json" in content:
                    assert "$ref" in content["application/json"]["schema"], (method, path)
                # These answer 202 with an empty body, which the document must not call JSON.
                if status == "202":
                    queued += 1
                    assert content == {}, (method, path)
    assert queued == 9  # eight mailbox actions and the confirmation link's resend


def test_answer_models_are_named_after_their_shape() -> None:
    schema = declared("POST", "/brands/{brand}/contacts").json_schema()
    # A bare list's own name is "list": the title says what it holds instead.
    assert schema["title"] == "ContactArrayAnswer"
