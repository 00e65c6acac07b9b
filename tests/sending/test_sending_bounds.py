"""A template past a bound fails its own campaign at send time, naming the bound; every other
campaign due at the same time still goes out in full."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import text

from mailroom.config import Settings
from tests.support.campaigns import received, schedule
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.world import World

# Stored behind the API's back (it refuses each of these on the way in), as an older version or a
# direct database edit could have left them.
BAD = {
    "loops": (
        "<p>Hi</p>\n{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "html: line 2: the template took longer than 1.01 s to render",
    ),
    "padding": ("{{ '{:>50000000}'.format('a') }}", "html: line 1: the template asked for a format width"),
    "centre": ("{{ 'a'|center(50000000) }}", "html: line 1: the template asked for a center() width of 50000000"),
    "replace": (
        "{{ ('a' * 1000)|replace('a', 'aaaaaaaaaa')|replace('a', 'aaaaaaaaaa')|replace('a', 'aaaaaaaaaa') }}",
        "html: line 1: the template built a value that is too large (replace would add 900000 characters)",
    ),
    "memory": ("{{ ([('a' * 100000)] * 100000)|join }}", "html: line 1: the template used more than 512 MiB of memory"),
    "output": (
        "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
        "html: the rendered html is larger than 2097152 bytes",
    ),
}


async def test_campaigns_past_a_bound_fail_while_the_one_due_with_them_is_sent(
    world: World, app: FastAPI, settings: Settings
) -> None:
    admin = await world.brand_admin()
    good_addresses = [f"good{i}@example.com" for i in range(30)]
    await world.contacts(
        admin, [{"emails": [a], "first_name": f"G{i}", "tags": ["good"]} for i, a in enumerate(good_addresses)]
    )
    good = await schedule(
        admin,
        path="/emails/individual",
        to=[{"recipient_type": "Tag", "tag": "good"}],
        subject="Hi {{ recipient.first_name }}",
        due_at=None,
    )
    bad = {
        name: await schedule(
            admin,
            path="/emails/individual",
            to=[{"recipient_type": "Email", "email": f"{name}@example.com"}],
            due_at=None,
        )
        for name in BAD
    }
    async with app.state.sessionmaker() as s, s.begin():
        for name, made in bad.items():
            await s.execute(
                text("UPDATE email_campaigns SET html = :html WHERE id = :id"), {"id": made["id"], "html": BAD[name][0]}
            )
        await s.execute(
            text("UPDATE email_campaigns SET due_at = now(), updated_at = now() WHERE id = ANY(:ids)"),
            {"ids": [good["id"], *(made["id"] for made in bad.values())]},
        )
    with smtp_server() as server:
        async with running_worker(
            settings, transport="smtp", smtp_url=server.url, render_seconds=1.0, render_seconds_per_message=0.01
        ):
            good_state = await wait_until_sent(app.state.sessionmaker, good["id"], within=60)
            states = {
                name: await wait_until_sent(app.state.sessionmaker, made["id"], within=60) for name, made in bad.items()
            }
    assert received(server) == sorted(good_addresses)
    assert good_state["failed_at"] is None and good_state["sent"] == 30
    assert {m.message["Subject"] for m in server.messages} == {f"Hi G{i}" for i in range(30)}
    for name, state in states.items():
        assert state["failed_at"] is not None, name
        assert state["failure"].startswith(BAD[name][1]), (name, state["failure"])
        rows = admin.data(await admin.get(f"/emails/{bad[name]['id']}/emails"))
        assert [r["error"] for r in rows] == [state["failure"]]
