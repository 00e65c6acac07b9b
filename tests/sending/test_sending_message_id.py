"""Outgoing Message-IDs name the domain the mail is sent From, not the host the service runs on."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parseaddr

from fastapi import FastAPI

from mailroom.config import Settings
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World


async def test_message_id_uses_the_from_domain(world: World, app: FastAPI, settings: Settings) -> None:
    admin = await world.brand_admin()
    agent = await world.member(admin, email="jo@brokerage-mail.example.org")
    pending = await world.member(admin, email="new@unconfirmed.example.net", confirmed=False)
    await world.contacts(admin, [{"emails": ["ann@example.com"], "tags": ["t"]}])
    made = []
    for sender in (agent, pending):
        body = {
            "from": str(sender.user),
            "subject": "News",
            "html": "<p>Hello</p>",
            "to": [{"recipient_type": "Tag", "tag": "t"}],
            "due_at": datetime.now(UTC).isoformat(),
        }
        made.append(admin.data(await admin.post("/emails/individual", body))["id"])
    with smtp_server() as server:
        async with running_worker(settings, transport="smtp", smtp_url=server.url, default_from="mail@sender.example"):
            for campaign in made:
                await wait_until_sent(app.state.sessionmaker, campaign)
    campaign_mail = [m for m in server.messages if m.rcpt_tos == ["ann@example.com"]]
    by_from = {parseaddr(m.message["From"])[1]: m.message for m in campaign_mail}
    assert set(by_from) == {"jo@brokerage-mail.example.org", "mail@sender.example"}
    assert by_from["jo@brokerage-mail.example.org"]["Message-ID"].endswith("@brokerage-mail.example.org>")
    # An unconfirmed user's mail goes From the service's address, and its Message-ID follows it.
    assert by_from["mail@sender.example"]["Message-ID"].endswith("@sender.example>")
    assert by_from["mail@sender.example"]["Reply-To"] == "new@unconfirmed.example.net"
    # The service's own mail (the address confirmation) too.
    (notice,) = [m for m in server.messages if m.rcpt_tos == ["new@unconfirmed.example.net"]]
    assert notice.message["Message-ID"].endswith("@sender.example>")
