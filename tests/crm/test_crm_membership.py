"""Who belongs to a brand: nobody pulls another brand's user in, an existing user joins by invitation,
and a new user's address counts as theirs only once they have confirmed it."""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from mailroom.crm.notices import confirmation_token
from mailroom.crypto import SecretBox
from tests.support.sender import first_mail_over_smtp
from tests.support.world import Actor, World


async def memberships(session: AsyncSession, brand: uuid.UUID) -> set[str]:
    rows = await session.execute(
        text('SELECT u.email FROM brand_members m JOIN users u ON u.id = m."user" WHERE m.brand = :b'), {"b": brand}
    )
    await session.commit()
    return {r.email for r in rows}


async def test_an_existing_users_address_neither_joins_nor_reveals_them(world: World, session: AsyncSession) -> None:
    victim_admin = await world.brand_admin()
    victim = await world.member(victim_admin, email="carol@other.example")
    attacker = await world.brand_admin()
    fresh = attacker.data(await attacker.post(f"/brands/{attacker.brand}/users", {"email": "new@other.example"}))
    for email in ("carol@other.example", "CAROL@Other.Example"):
        response = await attacker.post(f"/brands/{attacker.brand}/users", {"email": email, "role": "Agent"})
        # Answered exactly as a new address is: same status, same fields, the Admin's own words.
        assert response.status_code == 200, response.text
        answer = response.json()["data"]
        assert answer.keys() == fresh.keys() and answer["email"] == email and answer["email_confirmed"] is False
        assert str(victim.user) not in response.text and "Ann" not in response.text
    for pattern in ("%@other.example", "ca%@other.example", "c_rol@other.example"):
        # A pattern is never a lookup: at most it is a new, unrelated user's literal address.
        response = await attacker.post(f"/brands/{attacker.brand}/users", {"email": pattern, "role": "Agent"})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["id"] != str(victim.user) and response.json()["data"]["email"] == pattern
    assert "carol@other.example" not in await memberships(session, attacker.brand)
    # So a campaign cannot be sent as them from the attacker's brand.
    response = await attacker.post(
        "/emails",
        {"from": str(victim.user), "subject": "Wire the deposit", "html": "<p>now</p>",
         "to": [{"recipient_type": "Email", "email": "buyer@example.com"}], "due_at": None},
    )  # fmt: skip
    assert response.status_code == 400 and "from" in response.json()["message"]


async def test_adding_an_existing_users_address_mails_them_an_invitation_they_accept(
    world: World, settings: Settings, session: AsyncSession
) -> None:
    home = await world.brand_admin()
    gus = await world.member(home, email="gus@example.com")
    other = await world.brand_admin(brand_name="Harbor Homes", first="Hal", last="Admin")
    added = await other.post(f"/brands/{other.brand}/users", {"email": "Gus@Example.com", "role": "Admin"})
    assert added.status_code == 200 and "gus@example.com" not in await memberships(session, other.brand)
    server = await first_mail_over_smtp(settings)
    (message,) = server.messages
    assert message.rcpt_tos == ["gus@example.com"]
    body = message.raw.decode()
    assert "Subject: You are invited to Harbor Homes on mailroom" in body and "Hal Admin" in body
    link = re.search(r"http://mailroom\.test(/invitations/\S+/accept)", body)
    assert link is not None
    # Only the invited account itself can accept it.
    assert (await other.post(link.group(1))).status_code == 403
    accepted = gus.data(await gus.post(link.group(1)))
    assert accepted["brand"] == str(other.brand) and accepted["role"] == "Admin"
    assert "gus@example.com" in await memberships(session, other.brand)


async def test_an_admin_of_the_parent_brand_invites_an_existing_account_to_a_team(
    world: World, settings: Settings, session: AsyncSession
) -> None:
    home = await world.brand_admin()
    ivy = await world.member(home, email="ivy@example.com")
    brokerage = await world.brand_admin(brand_name="Bay Brokerage")
    team = brokerage.data(await brokerage.post("/brands", {"name": "Bay Team", "parent": str(brokerage.brand)}))
    # An Admin of the brokerage only: their role in the team comes through its parent.
    parent_admin = await world.member(brokerage, role="Admin")
    added = await parent_admin.post(f"/brands/{team['id']}/users", {"email": "ivy@example.com"})
    assert added.status_code == 200, added.text
    server = await first_mail_over_smtp(settings)
    (message,) = server.messages
    assert message.rcpt_tos == ["ivy@example.com"] and "You are invited to Bay Team" in message.raw.decode()
    link = re.search(r"http://mailroom\.test(/invitations/\S+/accept)", message.raw.decode())
    assert link is not None
    assert ivy.data(await ivy.post(link.group(1)))["brand"] == team["id"]


async def test_an_existing_user_joins_another_brand_by_accepting_an_invitation(
    world: World, session: AsyncSession
) -> None:
    home = await world.brand_admin()
    dan = await world.member(home, email="dan@example.com")
    other = await world.brand_admin()
    invitation = other.data(await other.post(f"/brands/{other.brand}/invitations", {"email": "Dan@Example.com"}))
    token = invitation["token"]
    # The token is sealed: the address is not in it (a random token may well hold the letters "dan").
    assert "dan@example.com" not in token.lower() and "dan%40example" not in token.lower()
    assert invitation["role"] == "Agent"

    # Nobody but Dan can use it: not the inviting Admin, not a stranger, not a forged or altered token.
    assert (await other.post(f"/invitations/{token}/accept")).status_code == 403
    stranger = await world.brand_admin()
    assert (await stranger.post(f"/invitations/{token}/accept")).status_code == 403
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (await dan.post(f"/invitations/{forged}/accept")).status_code == 404
    assert "dan@example.com" not in await memberships(session, other.brand)

    accepted = dan.data(await dan.post(f"/invitations/{token}/accept"))
    assert accepted["brand"] == str(other.brand) and accepted["role"] == "Agent"
    assert "dan@example.com" in await memberships(session, other.brand)
    # Accepting again changes nothing; an Agent cannot invite.
    assert (await dan.post(f"/invitations/{token}/accept")).status_code == 200
    agent_invite = await dan.post(f"/brands/{other.brand}/invitations", {"email": "x@example.com"})
    assert agent_invite.status_code == 403


async def test_an_invitation_dies_with_its_admins_role_and_its_expiry(
    world: World, session: AsyncSession, app: FastAPI
) -> None:
    home = await world.brand_admin()
    erin = await world.member(home, email="erin@example.com")
    other = await world.brand_admin()
    token = other.data(await other.post(f"/brands/{other.brand}/invitations", {"email": "erin@example.com"}))["token"]
    await session.execute(text("UPDATE brand_members SET role = 'Agent' WHERE \"user\" = :u"), {"u": other.user})
    await session.commit()
    assert (await erin.post(f"/invitations/{token}/accept")).status_code == 404
    box: SecretBox = app.state.secret_box
    payload = {"brand": str(other.brand), "email": "erin@example.com", "role": "Admin", "by": str(other.user)}
    expired = box.seal("invitation", payload, ttl=-1)
    assert (await erin.post(f"/invitations/{expired}/accept")).status_code == 404
    assert "erin@example.com" not in await memberships(session, other.brand)


async def test_a_top_level_brand_gives_no_reach_into_others(world: World) -> None:
    victim = await world.brand_admin()
    newcomer = await world.brand_admin()
    child = await newcomer.post("/brands", {"name": "Sneaky", "parent": str(victim.brand)})
    assert child.status_code == 403
    assert (await newcomer.get(f"/brands/{victim.brand}/contacts")).status_code == 403
    invite = await newcomer.post(f"/brands/{victim.brand}/invitations", {"email": "me@example.com"})
    assert invite.status_code == 403


async def test_a_new_user_confirms_their_address_by_the_mailed_link(
    world: World, app: FastAPI, settings: Settings, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    created = admin.data(await admin.post(f"/brands/{admin.brand}/users", {"email": "fay@example.com"}))
    assert created["email_confirmed"] is False
    server = await first_mail_over_smtp(settings)
    (message,) = server.messages
    assert message.rcpt_tos == ["fay@example.com"]
    body = message.raw.decode()
    assert "Subject: Confirm your email address" in body
    link = re.search(r"http://mailroom\.test(/users/confirm/\S+)", body)
    assert link is not None
    path = link.group(1)

    client = admin.client
    page = await client.get(path)  # a mail scanner following the link confirms nothing
    assert page.status_code == 200 and "<form method=post>" in page.text
    assert (await client.post(path[:-3] + "xyz")).status_code == 404
    confirmed = await session.scalar(text("SELECT email_confirmed FROM users WHERE id = :u"), {"u": created["id"]})
    await session.commit()
    assert confirmed is False

    assert (await client.post(path)).status_code == 200
    confirmed = await session.scalar(text("SELECT email_confirmed FROM users WHERE id = :u"), {"u": created["id"]})
    await session.commit()
    assert confirmed is True


async def test_a_confirmation_link_is_for_the_address_it_was_mailed_to(
    world: World, app: FastAPI, session: AsyncSession
) -> None:
    admin = await world.brand_admin()
    user = admin.data(await admin.post(f"/brands/{admin.brand}/users", {"email": "gil@example.com"}))
    box: SecretBox = app.state.secret_box
    stale = confirmation_token(box, user["id"], "gil@old.example")
    assert (await admin.client.post(f"/users/confirm/{stale}")).status_code == 404
    expired = box.seal("email-confirmation", {"user": user["id"], "email": "gil@example.com"}, ttl=-1)
    assert (await admin.client.post(f"/users/confirm/{expired}")).status_code == 404
    # A token of another purpose (an invitation) is no confirmation.
    other = box.seal("invitation", {"user": user["id"], "email": "gil@example.com"}, ttl=60)
    assert (await admin.client.post(f"/users/confirm/{other}")).status_code == 404
    confirmed = await session.scalar(text("SELECT email_confirmed FROM users WHERE id = :u"), {"u": user["id"]})
    await session.commit()
    assert confirmed is False


async def test_a_user_asks_for_a_new_confirmation_link(world: World, session: AsyncSession) -> None:
    admin = await world.brand_admin()
    fresh: Actor = await world.member(admin, confirmed=False)
    assert (await fresh.post("/users/self/email-confirmation")).status_code == 202
    jobs = await session.scalar(
        text("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'mailroom.send_notice' AND args->>'user' = :u"),
        {"u": str(fresh.user)},
    )
    await session.commit()
    assert jobs == 2  # the one queued when the Admin created them, and this one
    assert (await admin.post("/users/self/email-confirmation")).status_code == 409  # bootstrap Admins are confirmed
