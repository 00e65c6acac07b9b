"""Mailbox actions (mark read or unread, trash, archive) on Gmail and Outlook, through the API and the worker.

The worker runs against local servers speaking the Gmail API and Microsoft Graph; what the mailbox
holds afterwards (labels, read state, folder) and the requests the provider received are checked.
Bad input is answered 4xx naming the field and queues no job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.config import Settings
from tests.support.google_server import SEND_SCOPE, gmail_server
from tests.support.graph_server import graph_server
from tests.support.mailboxes import mailbox_settings
from tests.support.sender import running_worker
from tests.support.world import Actor, World


async def jobs(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """The mailbox-action jobs by status (done ones are deleted by the worker)."""
    async with sessionmaker() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT status::text, count(*) FROM procrastinate_jobs "
                    "WHERE task_name = 'mailroom.mailbox_action' GROUP BY status"
                )
            )
        ).all()
    return {status: n for status, n in rows}


async def wait_for_jobs(sessionmaker: async_sessionmaker[AsyncSession], *, within: float = 20.0) -> dict[str, int]:
    """Wait until no mailbox-action job is waiting or running; the jobs left (failed ones)."""
    deadline = time.monotonic() + within
    while True:
        left = await jobs(sessionmaker)
        if not left.get("todo") and not left.get("doing"):
            return left
        if time.monotonic() > deadline:
            raise AssertionError(f"mailbox actions not done in {within}s: {left}")
        await asyncio.sleep(0.05)


def accepted(response: Any) -> None:
    assert response.status_code == 202, response.text
    assert response.content == b""


# -- Gmail ---------------------------------------------------------------------------------------


async def test_gmail_read_unread_trash_and_archive_change_the_messages_labels(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin, access_token="tok-gmail")
    base = f"/emails/google/{credential}"
    with gmail_server(tokens={"tok-gmail"}) as gmail:
        one, two, three, other = (gmail.add_message() for _ in range(4))
        async with running_worker(settings, **mailbox_settings(gmail.url)):
            accepted(await admin.put(f"{base}/messages/{one}", {"status": True}))
            accepted(await admin.put(f"{base}/messages", {"status": True, "messageIds": [two, three]}))
            await wait_for_jobs(app.state.sessionmaker)
            assert [gmail.labels(m) for m in (one, two, three)] == [{"INBOX"}] * 3

            accepted(await admin.put(f"{base}/messages", {"status": False, "messageIds": [two], "extra": 1}))
            await wait_for_jobs(app.state.sessionmaker)
            assert gmail.labels(two) == {"INBOX", "UNREAD"}

            # The document's trash example also sends a status: it means nothing there.
            accepted(await admin.post(f"{base}/trash", {"status": False, "messageIds": [one]}))
            accepted(await admin.post(f"{base}/archive", {"messageIds": [three]}))
            assert await wait_for_jobs(app.state.sessionmaker) == {}
    assert gmail.labels(one) == {"INBOX", "TRASH"}
    assert gmail.labels(three) == set()
    assert gmail.labels(other) == {"INBOX", "UNREAD"}  # never named
    assert sorted((m.ids, m.add, m.remove) for m in gmail.modifications) == sorted(
        [
            ([one], [], ["UNREAD"]),
            ([two, three], [], ["UNREAD"]),
            ([two], ["UNREAD"], []),
            ([one], ["TRASH"], []),
            ([three], [], ["INBOX"]),
        ]
    )
    assert {r.token for r in gmail.requests} == {"tok-gmail"}


async def test_gmail_takes_2500_ids_in_three_calls_of_at_most_1000(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin, access_token="tok-gmail")
    with gmail_server(tokens={"tok-gmail"}) as gmail:
        ids = [gmail.add_message() for _ in range(2500)]
        accepted(await admin.post(f"/emails/google/{credential}/archive", {"messageIds": ids}))
        assert await jobs(app.state.sessionmaker) == {"todo": 1}  # one job for the whole request
        async with running_worker(settings, **mailbox_settings(gmail.url)):
            assert await wait_for_jobs(app.state.sessionmaker) == {}
    assert [len(m.ids) for m in gmail.modifications] == [1000, 1000, 500]
    assert [i for m in gmail.modifications for i in m.ids] == ids
    assert all(gmail.labels(i) == {"UNREAD"} for i in ids)


# A worker started and Gmail's one-second Retry-After waited out: over 3 s.
@pytest.mark.slow
async def test_a_throttled_gmail_action_is_retried_and_completes(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin, access_token="tok-gmail")
    with gmail_server(tokens={"tok-gmail"}) as gmail:
        message = gmail.add_message()
        gmail.fail_next(1, 429, "rateLimitExceeded", retry_after=1)
        accepted(await admin.post(f"/emails/google/{credential}/trash", {"messageIds": [message]}))
        async with running_worker(settings, **mailbox_settings(gmail.url)):
            assert await wait_for_jobs(app.state.sessionmaker, within=30) == {}
    assert [r.status for r in gmail.requests] == [429, 204]
    assert gmail.labels(message) == {"INBOX", "UNREAD", "TRASH"}


async def test_a_refused_action_is_logged_and_not_retried(
    world: World, app: FastAPI, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await world.brand_admin()
    # Our record says mail.modify, but the token Google holds was granted sending only.
    credential = await world.google_credential(admin, access_token="tok-send-only")
    with gmail_server(tokens={"tok-send-only": {SEND_SCOPE}}) as gmail:
        message = gmail.add_message()
        accepted(await admin.put(f"/emails/google/{credential}/messages/{message}", {"status": True}))
        with caplog.at_level(logging.WARNING, logger="mailroom.mailboxes.jobs"):
            async with running_worker(settings, **mailbox_settings(gmail.url)):
                assert await wait_for_jobs(app.state.sessionmaker) == {}
    assert [r.status for r in gmail.requests] == [403]
    assert gmail.labels(message) == {"INBOX", "UNREAD"}
    (line,) = [r.getMessage() for r in caplog.records if r.name == "mailroom.mailboxes.jobs"]
    assert f"Gmail action read on 1 messages of credential {credential} refused" in line
    assert "mail.modify" in line and "tok-send-only" not in line


async def test_an_action_on_a_mailbox_disconnected_since_does_nothing(
    world: World, app: FastAPI, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin, access_token="tok-gmail")
    with gmail_server(tokens={"tok-gmail"}) as gmail:
        message = gmail.add_message()
        accepted(await admin.post(f"/emails/google/{credential}/archive", {"messageIds": [message]}))
        admin.data(await admin.post(f"/users/self/google-credentials/{credential}/revoke"))
        with caplog.at_level(logging.WARNING, logger="mailroom.mailboxes.jobs"):
            async with running_worker(settings, **mailbox_settings(gmail.url)):
                assert await wait_for_jobs(app.state.sessionmaker) == {}
    assert gmail.requests == []
    assert gmail.labels(message) == {"INBOX", "UNREAD"}
    assert any(
        f"the Gmail account {credential} is revoked" in r.getMessage()
        for r in caplog.records
        if r.name == "mailroom.mailboxes.jobs"
    )


# -- Outlook -------------------------------------------------------------------------------------


async def test_outlook_read_unread_trash_and_archive_change_the_messages(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.microsoft_credential(admin, access_token="tok-graph")
    base = f"/emails/microsoft/{credential}"
    with graph_server(access_token="tok-graph") as graph:
        one, two, three, other = (graph.seed(subject=f"m{i}", sender="ann@example.com") for i in range(4))
        async with running_worker(settings, **mailbox_settings(graph_url=graph.url)):
            # Graph ids end in "=": sent as they are in the path.
            accepted(await admin.put(f"{base}/messages/{one.id}", {"status": True}))
            accepted(await admin.put(f"{base}/messages", {"status": True, "messageIds": [two.id, three.id]}))
            await wait_for_jobs(app.state.sessionmaker)
            assert [m.is_read for m in (one, two, three)] == [True, True, True]

            accepted(await admin.put(f"{base}/messages", {"status": False, "messageIds": [two.id]}))
            await wait_for_jobs(app.state.sessionmaker)
            assert two.is_read is False

            accepted(await admin.post(f"{base}/trash", {"messageIds": [one.id]}))
            accepted(await admin.post(f"{base}/archive", {"messageIds": [three.id]}))
            assert await wait_for_jobs(app.state.sessionmaker) == {}
    assert [(m.folder, m.is_read) for m in (one, two, three, other)] == [
        ("deleteditems", True),
        ("inbox", False),
        ("archive", True),
        ("inbox", False),
    ]
    moves = [(unquote(r.path), r.body) for r in graph.requests if r.in_batch and r.path.endswith("/move")]
    assert sorted(moves) == sorted(
        [
            (f"/me/messages/{one.id}/move", {"destinationId": "deleteditems"}),
            (f"/me/messages/{three.id}/move", {"destinationId": "archive"}),
        ]
    )


async def test_outlook_takes_45_ids_in_batches_of_20_20_and_5(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    credential = await world.microsoft_credential(admin, access_token="tok-graph")
    with graph_server(access_token="tok-graph") as graph:
        messages = [graph.seed(subject=f"m{i}", sender="ann@example.com") for i in range(45)]
        body = {"status": True, "messageIds": [m.id for m in messages]}
        accepted(await admin.put(f"/emails/microsoft/{credential}/messages", body))
        async with running_worker(settings, **mailbox_settings(graph_url=graph.url)):
            assert await wait_for_jobs(app.state.sessionmaker) == {}
    assert graph.batch_sizes == [20, 20, 5]
    assert all(m.is_read for m in messages)
    patched = [r for r in graph.requests if r.in_batch]
    assert {(r.method, r.body["isRead"]) for r in patched} == {("PATCH", True)}


# A worker started and two of Graph's one-second Retry-After pauses waited out: about 5 s.
@pytest.mark.slow
async def test_throttled_outlook_actions_are_retried_and_complete(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    credential = await world.microsoft_credential(admin, access_token="tok-graph")
    with graph_server(access_token="tok-graph") as graph:
        messages = [graph.seed(subject=f"m{i}", sender="ann@example.com") for i in range(3)]
        graph.fail_next(1, 429, retry_after=1, path="$batch")  # the whole batch refused
        graph.fail_next(1, 429, retry_after=1, in_batch=True)  # then one request inside it
        accepted(await admin.post(f"/emails/microsoft/{credential}/trash", {"messageIds": [m.id for m in messages]}))
        async with running_worker(settings, **mailbox_settings(graph_url=graph.url)):
            assert await wait_for_jobs(app.state.sessionmaker, within=30) == {}
    assert [m.folder for m in messages] == ["deleteditems"] * 3
    batches = [r.status for r in graph.requests if r.path == "/$batch"]
    assert batches == [429, 200, 200]
    assert [r.status for r in graph.requests if r.in_batch] == [429, 201, 201, 201]


# -- Bad input -----------------------------------------------------------------------------------


async def refused(actor: Actor, method: str, path: str, body: Any) -> tuple[int, str]:
    response = await getattr(actor, method)(path, body)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()["message"]


@pytest.mark.parametrize("kind", ["google", "microsoft"])
async def test_a_credential_that_cannot_act_is_refused_and_queues_nothing(
    world: World, app: FastAPI, kind: str
) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin)
    make = world.google_credential if kind == "google" else world.microsoft_credential
    label = "Gmail" if kind == "google" else "Outlook"
    others = await make(agent)
    revoked = await make(admin, revoked=True)
    deleted = await make(admin, deleted=True)
    no_modify = await make(admin, scopes=("profile", "mail.send"))
    no_send = await make(admin, scopes=("profile", "mail.read", "mail.modify"))
    body = {"status": True, "messageIds": ["m1"]}
    for method, tail in (("put", "messages/m1"), ("put", "messages"), ("post", "trash"), ("post", "archive")):
        expected = {
            others: (404, f"credentialId: no such {label} account of yours"),
            "not-a-uuid": (404, f"credentialId: no such {label} account of yours"),
            "00000000-0000-0000-0000-000000000000": (404, f"credentialId: no such {label} account of yours"),
            revoked: (400, f"credentialId: this {label} account is disconnected: revoked"),
            deleted: (400, f"credentialId: this {label} account is disconnected: deleted"),
        }
        for credential, answer in expected.items():
            # The credential is checked before the body: even an empty body learns only that.
            assert await refused(admin, method, f"/emails/{kind}/{credential}/{tail}", {}) == answer
        status, message = await refused(admin, method, f"/emails/{kind}/{no_modify}/{tail}", body)
        assert status == 403 and message.startswith(f"credentialId: this {label} account did not grant mail.modify")
        # The document asks for both: modifying alone is not enough.
        status, message = await refused(admin, method, f"/emails/{kind}/{no_send}/{tail}", body)
        assert status == 403 and message.startswith(f"credentialId: this {label} account did not grant mail.send:")
    # The owner of the credential is refused nothing; the brand's admin is refused the agent's mailbox.
    accepted(await agent.post(f"/emails/{kind}/{others}/archive", body))
    assert await jobs(app.state.sessionmaker) == {"todo": 1}


BAD_BODIES: list[tuple[str, str, Any, str]] = [
    ("put", "messages", {"status": True}, "messageIds: is required"),
    ("put", "messages", {"status": True, "messageIds": []}, "messageIds: must name at least one message"),
    ("put", "messages", {"status": True, "messageIds": "m1"}, "messageIds: must be a list"),
    ("put", "messages", {"status": True, "messageIds": {"id": "m1"}}, "messageIds: must be a list"),
    ("put", "messages", {"status": True, "messageIds": ["m1", 2]}, "messageIds[1]: must be a non-empty string"),
    ("put", "messages", {"status": True, "messageIds": [None]}, "messageIds[0]: must be a non-empty string"),
    ("put", "messages", {"status": True, "messageIds": ["m1", " "]}, "messageIds[1]: must be a non-empty string"),
    ("put", "messages", {"status": True, "messageIds": ["x" * 1001]}, "messageIds[0]: must be at most 1000"),
    ("put", "messages", {"status": True, "messageIds": ["a\x00b"]}, "messageIds[0]: must not contain NUL"),
    ("put", "messages", {"status": True, "messageIds": [f"m{i}" for i in range(10_001)]}, "messageIds: at most"),
    ("put", "messages", {"messageIds": ["m1"]}, "status: must be true (read) or false (unread)"),
    ("put", "messages", {"status": "true", "messageIds": ["m1"]}, "status: must be true"),
    ("put", "messages", {"status": 1, "messageIds": ["m1"]}, "status: must be true"),
    ("put", "messages", {"status": None, "messageIds": ["m1"]}, "status: must be true"),
    ("put", "messages/m1", {}, "status: must be true"),
    ("put", "messages/m1", {"status": 0}, "status: must be true"),
    ("put", "messages/m1", ["status"], "body: must be a JSON object"),
    ("put", "messages/m1", None, "body: must be a JSON object"),
    ("post", "trash", {}, "messageIds: is required"),
    ("post", "trash", {"messageIds": []}, "messageIds: must name at least one message"),
    ("post", "trash", {"messageIds": [""]}, "messageIds[0]: must be a non-empty string"),
    ("post", "archive", {"messageIds": "m1,m2"}, "messageIds: must be a list"),
    ("post", "archive", {"messageIds": [["m1"]]}, "messageIds[0]: must be a non-empty string"),
    ("post", "archive", {"messageIds": [f"m{i}" for i in range(10_001)]}, "messageIds: at most 10000 ids"),
    ("post", "archive", "m1", "body: must be a JSON object"),
]


@pytest.mark.parametrize("kind", ["google", "microsoft"])
@pytest.mark.parametrize(("method", "tail", "body", "message"), BAD_BODIES)
async def test_bad_input_names_the_field_and_queues_nothing(
    world: World, app: FastAPI, kind: str, method: str, tail: str, body: Any, message: str
) -> None:
    admin = await world.brand_admin()
    make = world.google_credential if kind == "google" else world.microsoft_credential
    credential = await make(admin)
    status, answer = await refused(admin, method, f"/emails/{kind}/{credential}/{tail}", body)
    assert (status, answer[: len(message)]) == (400, message)
    assert await jobs(app.state.sessionmaker) == {}


async def test_malformed_json_and_no_token_are_refused(world: World, app: FastAPI) -> None:
    admin = await world.brand_admin()
    credential = await world.google_credential(admin)
    path = f"/emails/google/{credential}/archive"
    response = await admin.post(path, content=b'{"messageIds": [', headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["message"] == "body: malformed JSON"
    response = await admin.client.post(path, json={"messageIds": ["m1"]})
    assert response.status_code == 401
    assert await jobs(app.state.sessionmaker) == {}


async def test_the_most_ids_a_request_takes_are_queued_as_one_job(world: World, app: FastAPI) -> None:
    admin = await world.brand_admin()
    credential = await world.microsoft_credential(admin)
    ids = [f"AAMkAD-{i:06d}=" for i in range(10_000)]
    accepted(await admin.post(f"/emails/microsoft/{credential}/archive", {"messageIds": ids}))
    async with app.state.sessionmaker() as s:
        (args,) = (
            await s.execute(text("SELECT args FROM procrastinate_jobs WHERE task_name = 'mailroom.mailbox_action'"))
        ).scalars()
    assert args == {"kind": "microsoft", "credential": credential, "action": "archive", "message_ids": ids}


async def test_a_message_id_holding_a_slash_is_taken_whole(world: World, app: FastAPI) -> None:
    admin = await world.brand_admin()
    credential = await world.microsoft_credential(admin)
    accepted(await admin.put(f"/emails/microsoft/{credential}/messages/AAMk%2Fx+y=", {"status": False}))
    async with app.state.sessionmaker() as s:
        (args,) = (await s.execute(text("SELECT args FROM procrastinate_jobs"))).scalars()
    assert (args["action"], args["message_ids"]) == ("unread", ["AAMk/x+y="])


@pytest.mark.parametrize(
    "message_id",
    ["..%2F..%2Fevil%3Fx%3D1", "AAMk..", "AAMk%3Fx%3D1", "AAMk%23frag", "AAMk%20x", "AAMk%25", "AAMk%5Cx", "AAMk:x"],
)
async def test_an_outlook_message_id_outside_graphs_alphabet_never_reaches_a_graph_path(
    world: World, app: FastAPI, message_id: str
) -> None:
    admin = await world.brand_admin()
    credential = await world.microsoft_credential(admin, access_token="tok-graph")
    base = f"/emails/microsoft/{credential}"
    answers = [
        await admin.put(f"{base}/messages/{message_id}", {"status": True}),
        await admin.put(f"{base}/messages", {"status": True, "messageIds": [unquote(message_id)]}),
        await admin.post(f"{base}/trash", {"messageIds": [unquote(message_id)]}),
    ]
    for response in answers:
        assert response.status_code == 400, response.text
        assert response.json()["message"].split(": ")[0] in ("messageId", "messageIds[0]")
        assert "is not an Outlook message id" in response.json()["message"]
    # No job was queued: nothing can ever carry the id to Graph.
    assert await jobs(app.state.sessionmaker) == {}
