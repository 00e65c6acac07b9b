"""Templates checked at create and replace time: every bound answers 400 naming the field, a template
that runs too long is stopped, and the API keeps answering other requests meanwhile."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.campaigns import assert_refused, campaign, row_counts
from tests.support.render import running_render_children
from tests.support.world import Actor, World

# Short enough for a subject (998 characters), deep enough to exhaust Jinja's recursive parser.
NESTED_PARENS = "{{ " + "(" * 400 + "1" + ")" * 400 + " }}"
NESTED_LISTS = "{{ " + "[" * 400 + "]" * 400 + " }}"
SPIN = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"


@pytest.fixture
async def admin(world: World) -> Actor:
    return await world.brand_admin()


async def until_no_rendering_process_runs(*, within: float = 30.0) -> None:
    """Wait until every rendering process waits on its input or is gone. One that has just answered
    runs for a moment; one left with a template of minutes runs past any deadline."""
    deadline = time.monotonic() + within
    while running := running_render_children():
        assert time.monotonic() < deadline, f"rendering processes {running} still run a template"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("field", ["subject", "html", "text"])
@pytest.mark.parametrize("source", [NESTED_PARENS, NESTED_LISTS], ids=["parentheses", "lists"])
@pytest.mark.parametrize("path", ["/emails", "/emails/individual"])
async def test_deeply_nested_templates_are_refused_naming_the_field(
    admin: Actor, session: AsyncSession, field: str, source: str, path: str
) -> None:
    await assert_refused(admin, session, campaign(**{field: source}), field, path=path)
    response = await admin.post(path, campaign(**{field: source}))
    assert response.json()["message"] == f"{field}: the template is nested too deeply"


async def test_replacing_with_a_nested_template_is_refused_and_changes_nothing(
    admin: Actor, session: AsyncSession
) -> None:
    made = admin.data(await admin.post("/emails", campaign()))
    response = await admin.put(f"/emails/{made['id']}", campaign(text=NESTED_PARENS))
    assert response.status_code == 400
    assert response.json() == {"code": "BadRequest", "message": "text: the template is nested too deeply"}
    assert admin.data(await admin.get(f"/emails/{made['id']}"))["text"] == made["text"]


@pytest.mark.parametrize("path", ["/emails", "/emails/individual"])
async def test_an_individual_campaign_gets_its_templates_checked_too(
    admin: Actor, session: AsyncSession, path: str
) -> None:
    body = campaign(html="<p>{{ recipient.first_name </p>", individual=True if path == "/emails" else None)
    await assert_refused(admin, session, {k: v for k, v in body.items() if v is not None}, "html", path=path)


@pytest.mark.parametrize(
    ("field", "source", "reason"),
    [
        ("html", "<p>{{ '{:>50000000}'.format('a') }}</p>", "html: line 1: the template asked for a format width"),
        ("text", "{{ 'a'|center(50000000) }}", "text: line 1: the template asked for a center() width of 50000000"),
        ("subject", "{{ recipient.first_name * 999 }}", "subject: the rendered subject is longer than 998 characters"),
        ("html", "{{ ([('a' * 100000)] * 100000)|join }}", "html: line 1: the template used more than 512 MiB"),
        ("text", "a\n{{ 1 / 0 }}", "text: line 2: division by zero"),
    ],
)
async def test_a_template_that_breaks_a_bound_on_a_sample_recipient_is_refused(
    admin: Actor, session: AsyncSession, field: str, source: str, reason: str
) -> None:
    before = await row_counts(session)
    response = await admin.post("/emails", campaign(**{field: source}))
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(reason), response.json()
    assert await row_counts(session) == before


async def test_a_slow_template_is_stopped_and_the_api_keeps_answering(admin: Actor, session: AsyncSession) -> None:
    before = await row_counts(session)
    create = asyncio.ensure_future(admin.post("/emails", campaign(html="<p>Hi</p>\n" + SPIN)))
    answered_meanwhile = 0
    while not create.done():
        health = await admin.client.get("/health")
        assert health.status_code == 200
        answered_meanwhile += not create.done()
        await asyncio.sleep(0.05)
    response = await create
    assert response.status_code == 400
    assert response.json() == {
        "code": "BadRequest",
        "message": "html: line 2: the template took longer than 2.05 s to render",
    }
    # Minutes of work, refused at the bound and stopped there: no process goes on with it.
    await until_no_rendering_process_runs()
    # /health answered all the while.
    assert answered_meanwhile >= 5
    assert await row_counts(session) == before


async def test_hostile_html_without_text_gets_a_sane_text_version_within_the_render_bound(admin: Actor) -> None:
    # Each part once made the text derivation quadratic or raise: braces in a raw block, unclosed
    # tags, a numeric reference longer than int() accepts. The text is made in a rendering process
    # under the check's time bound, so a derivation gone quadratic again is refused, not accepted
    # late; bench/render.py prints how long the derivation takes.
    html = (
        "<p>Hello {{ recipient.first_name }}</p>{% raw %}" + "{" * 60_000 + "{% endraw %}"
        "<p>&#" + "9" * 5000 + ";</p><p>" + "<a " * 60_000
    )
    response = await admin.post("/emails", campaign(html=html, text=None))
    assert response.status_code == 200, response.text
    made = admin.data(response)
    assert made["text"] == "Hello {{ recipient.first_name }}\n\n{% raw %}" + "{" * 60_000 + "{% endraw %}\n\n\ufffd"


@pytest.mark.parametrize(
    ("field", "source", "line", "name", "hint"),
    [
        ("html", "Hi {{ recipient.frist_name }}", 1, "recipient.frist_name", "; did you mean recipient.first_name?"),
        ("subject", "News from {{ sendr.display_name }}", 1, "sendr", "; did you mean sender?"),
        ("text", "Hi\n\n{{ recipient['emial'] }}", 3, "recipient.emial", "; did you mean recipient.email?"),
        ("html", "<p>{{ price }}</p>", 1, "price", " (give a fallback"),
    ],
)  # fmt: skip
async def test_a_variable_that_does_not_exist_is_refused_naming_it_and_its_line(
    admin: Actor, session: AsyncSession, field: str, source: str, line: int, name: str, hint: str
) -> None:
    await assert_refused(admin, session, campaign(**{field: source}), field)
    answer = (await admin.post("/emails", campaign(**{field: source}))).json()
    assert answer["message"].startswith(f"{field}: line {line}: {name} is not a template variable{hint}"), answer


@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ recipient.nickname or recipient.first_name }}",
        "Hi {{ recipient.nickname | default('there') }}",
        "Hi {% if recipient.nickname is defined %}{{ recipient.nickname }}{% endif %}",
        "{% set greeting = 'Hi' %}{{ greeting }} {% for w in ['a'] %}{{ w }}{{ loop.index }}{% endfor %}",
        "{{ sender.phone_number }} {{ email.url }} {{ recipient.email }} {{ range(2) | list }}",
    ],
)
async def test_a_variable_with_a_fallback_or_of_the_template_s_own_is_accepted(admin: Actor, source: str) -> None:
    made = admin.data(await admin.post("/emails", campaign(html=f"<p>{source}</p>")))
    assert made["html"] == f"<p>{source}</p>"
