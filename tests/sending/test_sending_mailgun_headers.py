"""Nothing a recipient's data renders into reaches Mailgun as a header line of its own."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI

from mailroom.config import Settings
from tests.support.campaigns import mailgun, schedule
from tests.support.mailgun_server import mailgun_server
from tests.support.sender import running_worker, wait_until_sent
from tests.support.world import World

INJECTED = "Ann\r\nBcc: spy@evil.example"


@pytest.mark.parametrize("other_name", [INJECTED, "Bob"], ids=["subject shared by all", "subject per recipient"])
async def test_a_name_with_line_breaks_does_not_reach_mailgun_with_them(
    world: World, app: FastAPI, settings: Settings, other_name: str
) -> None:
    admin = await world.brand_admin()
    await world.contacts(
        admin,
        [{"emails": ["ann@example.com"], "first_name": INJECTED, "tags": ["t"]},
         {"emails": ["other@example.com"], "first_name": other_name, "tags": ["t"]}],
    )  # fmt: skip
    made = await schedule(
        admin,
        path="/emails/individual",
        to=[{"recipient_type": "Tag", "tag": "t"}],
        subject="Hi {{recipient.first_name}}",
    )
    with mailgun_server() as fake:
        async with running_worker(settings, **mailgun(settings, fake)):
            state = await wait_until_sent(app.state.sessionmaker, made["id"])
    assert state["sent"] == 2
    (request,) = fake.requests
    variables = json.loads(request.field("recipient-variables"))
    subject = request.field("subject")
    if subject == "%recipient.subject%":
        subjects = {address: v["subject"] for address, v in variables.items()}
        assert subjects == {"ann@example.com": "Hi Ann Bcc: spy@evil.example", "other@example.com": "Hi Bob"}
    else:
        assert subject == "Hi Ann Bcc: spy@evil.example"
    headers = [value for name, values in request.fields.items() if name.startswith("h:") for value in values]
    assert headers and not any(c in value for value in headers for c in "\r\n")
