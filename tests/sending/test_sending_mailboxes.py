"""Campaigns with a connected Gmail or Outlook mailbox go out through it, as the user would send them.

The worker runs against local servers speaking the Gmail API and Microsoft Graph; what they received
(the decoded MIME, the Graph message), the rows the sender wrote and the route each campaign took are
what is checked.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from mailroom.files.storage import LocalStorage
from tests.support.campaigns import received, schedule
from tests.support.google_server import ALL_SCOPES, gmail_server
from tests.support.graph_server import graph_server
from tests.support.mailboxes import mailbox_settings
from tests.support.oauth_server import FakeOAuth, oauth_server
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import Actor, World

PNG = b"\x89PNG\r\n\x1a\n" + b"logo" * 500
PDF = b"%PDF-1.4 flyer " + bytes(range(256)) * 40
ANSWERED = "<CAHd3xZ1@mail.gmail.com>"


async def stored_file(app: FastAPI, settings: Settings, actor: Actor, name: str, data: bytes, mime: str) -> str:
    LocalStorage(settings.data_dir / "files").write(f"{actor.user}/{name}", data)
    async with app.state.sessionmaker() as s, s.begin():
        file_id = (
            await s.execute(
                text("INSERT INTO files (created_by, path, name, mime, size) "
                     "VALUES (:u, :p, :name, :mime, :n) RETURNING id"),
                {"u": actor.user, "p": f"{actor.user}/{name}", "name": name, "mime": mime, "n": len(data)},
            )
        ).scalar_one()  # fmt: skip
    return str(file_id)


async def email_rows(app: FastAPI, campaign: str) -> list[Any]:
    async with app.state.sessionmaker() as s:
        return list(
            (
                await s.execute(
                    text(
                        "SELECT r.email_address, e.google_id, e.microsoft_id, e.esp_message_id, e.google_credential, "
                        "e.microsoft_credential, e.headers FROM email_campaign_emails r "
                        "JOIN emails e ON e.id = r.email WHERE r.campaign = :c ORDER BY r.email_address"
                    ),
                    {"c": campaign},
                )
            ).all()
        )


async def sender_name(app: FastAPI, actor: Actor) -> str:
    async with app.state.sessionmaker() as s:
        row = (await s.execute(text("SELECT first_name, last_name FROM users WHERE id = :u"), {"u": actor.user})).one()
    return f"{row.first_name} {row.last_name}".strip()


async def test_a_gmail_campaign_leaves_from_the_users_mailbox_in_its_thread(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin, access_token="tok-gmail")
    async with app.state.sessionmaker() as s:
        address = (
            await s.execute(text("SELECT email FROM google_credentials WHERE id = :id"), {"id": credential})
        ).scalar_one()
    logo = await stored_file(app, settings, admin, "logo.png", PNG, "image/png")
    flyer = await stored_file(app, settings, admin, "flyer.pdf", PDF, "application/pdf")
    with gmail_server(tokens={"tok-gmail"}) as gmail, smtp_server() as smtp:
        made = await schedule(
            admin,
            to=[{"recipient_type": "Email", "email": "jane@example.com"}],
            cc=[{"recipient_type": "Email", "email": "carl@example.com"}],
            bcc=[{"recipient_type": "Email", "email": "boss@example.com"}],
            subject="Re: the house on Elm",
            html='<p><img src="cid:logo"> Hi {{ sender.first_name }}</p>',
            google_credential=credential,
            headers={"in_reply_to": ANSWERED, "thread_id": "thread-77"},
            attachments=[{"file": logo, "is_inline": True, "content_id": "logo"}, {"file": flyer}],
        )
        async with running_worker(settings, transport="smtp", smtp_url=smtp.url, **mailbox_settings(gmail.url)):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["failed_at"] is None, state["failure"]
    assert smtp.messages == []  # nothing went through the ESP
    (sent,) = gmail.sent
    mime = sent.mime
    (author,) = mime["From"].addresses
    assert (author.display_name, author.addr_spec) == (await sender_name(app, admin), address)
    assert (mime["To"], mime["Cc"], mime["Bcc"]) == ("jane@example.com", "carl@example.com", "boss@example.com")
    assert mime["In-Reply-To"] == ANSWERED and mime["References"] == ANSWERED
    assert mime["Feedback-ID"] is None and mime["List-Unsubscribe"] is None
    assert sent.thread_id == "thread-77"
    parts = {part.get_filename() or part.get_content_type(): part for part in mime.walk()}
    assert parts["logo.png"].get_content() == PNG and parts["logo.png"]["Content-ID"] == "<logo>"
    assert parts["flyer.pdf"].get_content() == PDF
    rows = await email_rows(app, made["id"])
    assert [r.email_address for r in rows] == ["boss@example.com", "carl@example.com", "jane@example.com"]
    assert {(r.google_id, r.esp_message_id, str(r.google_credential)) for r in rows} == {(sent.id, None, credential)}
    assert rows[0].headers == {"In-Reply-To": ANSWERED, "References": ANSWERED}
    campaign = admin.data(await admin.get(f"/emails/{made['id']}"))
    assert campaign["thread_key"] == f"{credential}thread-77"
    assert campaign["sent"] == 3


async def test_more_recipients_than_gmail_takes_go_through_the_esp(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin, access_token="tok-gmail")
    addresses = [f"buyer{i:03}@example.com" for i in range(101)]
    with gmail_server(tokens={"tok-gmail"}) as gmail, smtp_server() as smtp:
        made = await schedule(
            admin, to=[{"recipient_type": "Email", "email": a} for a in addresses], google_credential=credential
        )
        async with running_worker(settings, transport="smtp", smtp_url=smtp.url, **mailbox_settings(gmail.url)):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["failed_at"] is None, state["failure"]
    assert gmail.sent == []
    assert received(smtp) == addresses and len(smtp.messages) == 1  # one shared message, as before
    rows = await email_rows(app, made["id"])
    assert all(r.google_id is None and r.esp_message_id and r.google_credential is None for r in rows)


async def test_an_outlook_reply_answers_the_message_in_the_mailbox(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.microsoft_credential(admin, access_token="tok-graph")
    flyer = await stored_file(app, settings, admin, "flyer.pdf", PDF, "application/pdf")
    with graph_server(access_token="tok-graph") as graph, smtp_server() as smtp:
        question = graph.seed(subject="Is the house still for sale?", sender="jane@example.com")
        made = await schedule(
            admin,
            to=[{"recipient_type": "Email", "email": "jane@example.com"}],
            subject="Re: Is the house still for sale?",
            html="<p>It is.</p>",
            microsoft_credential=credential,
            headers={"message_id": question.id},
            attachments=[{"file": flyer}],
        )
        async with running_worker(
            settings, transport="smtp", smtp_url=smtp.url, **mailbox_settings(graph_url=graph.url)
        ):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["failed_at"] is None, state["failure"]
    assert smtp.messages == []
    (sent,) = graph.sent
    assert sent.reply_to_message == question.id
    assert sent.to == ["jane@example.com"] and sent.subject == "Re: Is the house still for sale?"
    assert "It is." in sent.body["content"]
    assert [(a.name, a.data) for a in sent.attachments] == [("flyer.pdf", PDF)]
    rows = await email_rows(app, made["id"])
    assert [(r.microsoft_id, str(r.microsoft_credential), r.google_id) for r in rows] == [(sent.id, credential, None)]


# Waits out two of the mailbox's Retry-After pauses: about 4 s.
@pytest.mark.slow
async def test_a_throttled_mailbox_waits_and_the_campaign_does_not_fail(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin, access_token="tok-gmail")
    with gmail_server(tokens={"tok-gmail"}) as gmail, smtp_server() as smtp:
        gmail.fail_next(2, 429, retry_after=1)
        made = await schedule(
            admin, to=[{"recipient_type": "Email", "email": "jane@example.com"}], google_credential=credential
        )
        async with running_worker(settings, transport="smtp", smtp_url=smtp.url, **mailbox_settings(gmail.url)):
            state = await wait_until_sent(app.state.sessionmaker, made["id"], within=30)
    assert state["failed_at"] is None, state["failure"]
    assert len(gmail.sent) == 1 and smtp.messages == []
    assert [r.status for r in gmail.requests] == [429, 429, 200]
    async with app.state.sessionmaker() as s:
        paused = (
            await s.execute(text("SELECT paused_until FROM google_credentials WHERE id = :id"), {"id": credential})
        ).scalar_one()
    assert paused is not None


async def test_a_mailbox_that_lost_the_send_scope_fails_the_campaign_naming_it(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin, access_token="tok-gmail")
    with gmail_server(tokens={"tok-gmail"}) as gmail, smtp_server() as smtp:
        gmail.fail_next(1, 403, "insufficientPermissions")
        made = await schedule(
            admin, to=[{"recipient_type": "Email", "email": "jane@example.com"}], google_credential=credential
        )
        async with running_worker(settings, transport="smtp", smtp_url=smtp.url, **mailbox_settings(gmail.url)):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["failed_at"] is not None and "mail.send" in state["failure"]
    assert gmail.sent == [] and smtp.messages == []


class IssuedTokens(dict[str, frozenset[str]]):
    """Gmail's view of the access tokens the OAuth server has issued, however many refreshes later."""

    def __init__(self, oauth: FakeOAuth) -> None:
        super().__init__()
        self.oauth = oauth

    def get(self, token: str, default: Any = None) -> Any:
        return ALL_SCOPES if token in self.oauth.access_tokens else default


async def expired_google_credential(world: World, admin: Actor, oauth: FakeOAuth) -> tuple[str, str]:
    address = f"agent-{uuid.uuid4().hex[:6]}@example.com"
    access, refresh = oauth.grant("google", email=address, scopes=["mail.send", "mail.modify"])
    credential = await world.google_credential(
        admin, email=address, access_token=access, refresh_token=refresh, expires_at=time.time() - 60
    )
    return credential, refresh


async def test_an_expired_token_is_refreshed_before_the_send(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    with oauth_server() as oauth, gmail_server() as gmail, smtp_server() as smtp:
        gmail.tokens = IssuedTokens(oauth)
        credential, _ = await expired_google_credential(world, admin, oauth)
        made = await schedule(
            admin, to=[{"recipient_type": "Email", "email": "jane@example.com"}], google_credential=credential
        )
        configured = oauth.settings(settings).model_copy(update={"google_api_url": gmail.url})
        async with running_worker(configured, transport="smtp", smtp_url=smtp.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["failed_at"] is None, state["failure"]
    assert oauth.refreshes("google") == 1 and len(gmail.sent) == 1
    async with app.state.sessionmaker() as s:
        expires_at = (
            await s.execute(text("SELECT expires_at FROM google_credentials WHERE id = :id"), {"id": credential})
        ).scalar_one()
    assert expires_at.timestamp() > time.time() + 600


async def test_a_revoked_account_fails_the_campaign_and_refuses_new_ones(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    with oauth_server() as oauth, gmail_server() as gmail, smtp_server() as smtp:
        gmail.tokens = IssuedTokens(oauth)
        credential, refresh = await expired_google_credential(world, admin, oauth)
        oauth.revoke(refresh)
        made = await schedule(
            admin, to=[{"recipient_type": "Email", "email": "jane@example.com"}], google_credential=credential
        )
        configured = oauth.settings(settings).model_copy(update={"google_api_url": gmail.url})
        async with running_worker(configured, transport="smtp", smtp_url=smtp.url):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["failed_at"] is not None and "reconnect your Gmail account" in state["failure"]
    assert gmail.sent == [] and smtp.messages == []  # not sent some other way under the user's name
    again = await admin.post(
        "/emails",
        {"to": [{"recipient_type": "Email", "email": "jane@example.com"}], "subject": "Hi", "html": "<p>x</p>",
         "due_at": None, "google_credential": credential},
    )  # fmt: skip
    assert again.status_code == 400 and "google_credential" in again.json()["message"]
