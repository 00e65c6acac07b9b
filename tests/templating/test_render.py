from collections import OrderedDict
from types import SimpleNamespace

import pytest

from mailroom.templating import render
from mailroom.templating.render import (
    TemplateError,
    check_template,
    compile_campaign,
    html_to_text,
    uses_variable,
)
from tests.support.render import CONTEXT, HOSTILE_HTML


def test_html_to_text_of_the_campaign_example() -> None:
    html = (
        '<div>\n From: {{sender.display_name or "me"}}\n </div>\n <div>\n'
        ' To: {{recipient.display_name or "there"}}\n </div>'
    )
    assert html_to_text(html) == 'From: {{sender.display_name or "me"}}\nTo: {{recipient.display_name or "there"}}'


def test_html_to_text_blocks_links_images_and_entities() -> None:
    html = """<html><head><title>Ignored</title><style>p { color: red }</style></head><body>
      <h1>News &amp; notes</h1>
      <p>First   paragraph
         with a <a href="https://example.com/a">link</a> and <a href="https://example.com">https://example.com</a>.</p>
      <p>Line one<br>line two<br><br><br>line four</p>
      <ul><li>apples</li><li>pears <img src="p.png" alt="(pear)"></li><li><img src="x.png"></li></ul>
      <table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>
      <script>alert("no")</script><!-- hidden -->
      <a href="mailto:bob@example.com">bob@example.com</a> &lt;caf&eacute;&gt;&nbsp;end
    </body></html>"""
    assert html_to_text(html) == (
        "News & notes\n"
        "\n"
        "First paragraph with a link (https://example.com/a) and https://example.com.\n"
        "\n"
        "Line one\nline two\n\nline four\n"
        "\n"
        "apples\npears (pear)\n"
        "a b\nc d\n"
        "bob@example.com <café> end"
    )


def test_html_to_text_keeps_jinja_untouched() -> None:
    html = '<p>Hi {{ recipient.first_name }}, {% if a < b %}x{% endif %}</p><a href="{{email.url}}">View</a>'
    assert html_to_text(html) == "Hi {{ recipient.first_name }}, {% if a < b %}x{% endif %}\n\nView ({{email.url}})"


def test_render_fills_variables_and_defaults() -> None:
    compiled = compile_campaign(
        "Hi {{recipient.first_name}}",
        "<p>{{recipient.display_name or 'there'}} from {{user.first_name}} {{sender.last_name}}</p>"
        "<a href='{{email.url}}'>view</a>{{recipient.nickname}}|{{recipient.middle}}{{recipient.address.city}}",
        "Hello {{recipient.display_name or 'there'}}",
    )
    out = compiled.render(CONTEXT)
    assert out.subject == "Hi Ann"
    assert out.html == "<p>Ann Lee from Bob Ray</p><a href='https://mail.example.com/e/1'>view</a>|"
    assert out.text == "Hello Ann Lee"

    # Missing attributes, None values and objects instead of dicts all render as a person would expect.
    stranger = {"recipient": SimpleNamespace(display_name=None, first_name=None), "sender": {}, "email": {}}
    out = compiled.render(stranger)
    assert (out.subject, out.text) == ("Hi ", "Hello there")


def test_html_values_are_escaped_but_subject_and_text_are_not() -> None:
    name = "{{recipient.first_name}}"
    compiled = compile_campaign(name, f"<b>{name}</b>", name)
    out = compiled.render({"recipient": {"first_name": "<script>x</script> & co"}})
    assert out.html == "<b>&lt;script&gt;x&lt;/script&gt; &amp; co</b>"
    assert out.subject == out.text == "<script>x</script> & co"


def test_missing_text_is_derived_from_html_and_empty_bodies_become_a_space() -> None:
    compiled = compile_campaign("s", "<p>Hi {{recipient.first_name}}</p><p>Bye</p>", None)
    assert compiled.render(CONTEXT).text == "Hi Ann\n\nBye"
    empty = compile_campaign("s", None, None).render(CONTEXT)
    assert (empty.html, empty.text) == (None, " ")


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ recipient.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ recipient.update({'first_name': 'x'}) }}",
        "{% if ''.__class__ %}leak{% endif %}",
        "{{ (recipient.missing.__class__ or 'x') }}",
    ],
)
def test_sandbox_refuses_python_internals(expression: str) -> None:
    compiled = compile_campaign("Hi", f"<p>ok</p>\n<p>{expression}</p>", "t")
    with pytest.raises(TemplateError) as info:
        compiled.render(CONTEXT)
    assert info.value.field == "html"
    assert info.value.line == 2
    assert "unsafe" in str(info.value)
    assert str(info.value).startswith("html: line 2: the template tried to access an unsafe attribute")


def test_sandbox_limits_huge_values() -> None:
    with pytest.raises(TemplateError, match="too large"):
        compile_campaign("{{ 'x' * 100000000 }}", None, "t").render({})
    with pytest.raises(TemplateError, match="too large"):
        compile_campaign("{{ 10 ** 1000000 }}", None, "t").render({})


def test_render_time_errors_name_the_field() -> None:
    with pytest.raises(TemplateError) as info:
        compile_campaign("s", None, "a\n{{ 1 / 0 }}").render({})
    assert str(info.value) == "text: line 2: division by zero"


def test_syntax_errors_name_field_and_line() -> None:
    with pytest.raises(TemplateError) as info:
        compile_campaign("ok", "<p>\n</p>\n{{ recipient.first_name }", "t")
    assert (info.value.field, info.value.line) == ("html", 3)
    assert str(info.value) == "html: line 3: unexpected '}'"

    with pytest.raises(TemplateError, match=r"^subject: line 1: "):
        check_template("subject", "{% if %}")
    with pytest.raises(TemplateError, match="No filter named 'nope'"):
        check_template("text", "{{ x | nope }}")
    check_template("html", "<p>{{ recipient.first_name | upper }}</p>")


def test_uses_variable_reads_the_template_ast() -> None:
    assert uses_variable("Hi {{ recipient.first_name }}", "recipient")
    assert uses_variable("{% if recipient %}x{% endif %}", "recipient")
    assert not uses_variable("Hi {{ sender.first_name }} recipient.first_name", "recipient")
    assert not uses_variable("{% set recipient = 1 %}{{ recipient }}", "recipient")
    assert not uses_variable("{{ broken", "recipient")


def test_html_to_text_gets_through_hostile_input() -> None:
    # Each input once made a scan quadratic: hours at these sizes, which the per-test timeout fails.
    # How long each takes is printed by bench/render.py.
    texts = {name: html_to_text(html) for name, html in HOSTILE_HTML.items()}
    # Braces that open no Jinja markup are text; a tag, comment or declaration left open runs to the
    # end of the document and is dropped, as a browser drops it.
    kept = {"unclosed braces", "braces in a raw block"}
    assert texts == {name: html if name in kept else "" for name, html in HOSTILE_HTML.items()}


def test_html_to_text_survives_what_used_to_raise() -> None:
    # A numeric reference longer than int() accepts, and a look-alike of the internal tokens.
    assert html_to_text("<p>a&#" + "9" * 5000 + ";b</p>") == "a\ufffdb"
    assert html_to_text("<p>\ue0005\ue001 {{ x }}</p>") == "\ue0005\ue001 {{ x }}"
    assert html_to_text("<p>&#x110000; &#0000000065; &amp</p>") == "\ufffd A &"


def test_html_to_text_tags_that_the_scanner_must_get_right() -> None:
    html = (
        "<p>One<br/>two</p><title/>"
        "<SCRIPT type='x'>if (a <b && c> d) { document.write('<p>no</p>') }</script>"
        '<a href="https://example.com/?q=a>b&amp;c">the link</a> <img alt=\'"quoted"\' src=x>'
        "<div>tail <a href='x' unterminated"
    )
    assert html_to_text(html) == 'One\ntwo\n\nthe link (https://example.com/?q=a>b&c) "quoted"\ntail'


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ '{:>50000000}'.format('a') }}", "a format width or precision of 50000000"),
        ("{{ '{:.{p}f}'.format(1.5, p=50000000) }}", "a format width or precision of 50000000"),
        ("{{ 'a'|center(50000000) }}", "a center() width of 50000000"),
        ("{{ 'a'.ljust(50000000) }}", "a ljust() width of 50000000"),
        ("{{ 'a'.zfill(50000000) }}", "a zfill() width of 50000000"),
        ("{{ '%50000000s' % 'a' }}", "a width of 50000000"),
        ("{{ '%.50000000f' % 1.5 }}", "a precision of 50000000"),
        ("{{ '%s %*s' % ('x', 50000000, 'a') }}", "a width of 50000000"),
        ("{{ '%-50000000s'|format('a') }}", "a width of 50000000"),
        (
            "{{ ('a' * 1000)|replace('a', 'aaaaaaaaaa')|replace('a', 'aaaaaaaaaa')|replace('a', 'aaaaaaaaaa') }}",
            "replace would add 900000 characters",
        ),
        ("{{ ('a' * 1000).replace('a', 'b' * 1000) }}", "replace would add 999000 characters"),
        ("{{ ('\t' * 1000).expandtabs(100000) }}", "expandtabs would add"),
        ("{{ ('x\\n' * 10000)|indent(100000) }}", "indent would add"),
        ("{{ 'a b'|wordwrap(50000000) }}", "a wordwrap() width of 50000000"),
        ("{{ 'abc'|truncate(50000000) }}", "a truncate() length of 50000000"),
        ("{{ [1]|batch(50000000, 0)|list }}", "a batch() size of 50000000"),
        ("{{ [1]|slice(50000000)|list }}", "a slice() count of 50000000"),
        ("{{ lipsum(100000) }}", "lipsum() paragraphs of 100000"),
        ("{% for i in range(100000) %}{% endfor %}", "a range of 100000 numbers"),
        ("{{ ((10 ** 100) ** 100) ** 100 }}", "a power that is too large"),
    ],
)
def test_sandbox_caps_what_one_argument_can_make_expensive(template: str, reason: str) -> None:
    compiled = compile_campaign("s", f"<p>ok</p>\n{template}", "t")
    with pytest.raises(TemplateError) as info:
        compiled.render(CONTEXT)
    assert (info.value.field, info.value.line) == ("html", 2)
    assert reason in str(info.value)


def test_sandbox_caps_leave_ordinary_formatting_alone() -> None:
    template = (
        "{{ '{:>5}|{:.2f}'.format('a', 3.14159) }} {{ '%5.1f%%' % 99.44 }} {{ '%(n)s' % {'n': 1} }} "
        "{{ 'abc'|replace('b', 'xy') }} {{ 'Hi'|center(6) }}. {{ range(3)|list }} {{ '%s-%s'|format(1, 2) }} "
        "{{ 'a'.ljust(3) }}|{{ 'one two three'|wordwrap(7) }}|{{ [1, 2, 3]|batch(2)|list }}"
    )
    out = compile_campaign("s", None, template).render(CONTEXT)
    assert out.text == ("    a|3.14  99.4% 1 axyc   Hi  . [0, 1, 2] 1-2 a  |one two\nthree|[[1, 2], [3]]")


def test_rendered_fields_are_capped_in_size() -> None:
    loops = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match=r"^html: the rendered html is larger than 2097152 bytes$"):
        compile_campaign("s", loops, "t").render(CONTEXT)
    with pytest.raises(TemplateError, match=r"^subject: the rendered subject is longer than 998 characters$"):
        compile_campaign("{{ 'a' * 999 }}", None, "t").render(CONTEXT)
    # Characters that take 3 bytes each: under the limit in characters, over it in bytes.
    euros = "{% for i in range(20) %}{{ '€' * 50000 }}{% endfor %}"
    with pytest.raises(TemplateError, match="the rendered text is larger than 2097152 bytes"):
        compile_campaign("s", None, euros).render(CONTEXT)
    assert len(compile_campaign("{{ 'a' * 998 }}", None, "t").render(CONTEXT).subject) == 998


@pytest.mark.parametrize(
    "source", ["{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "{{ " + "[" * 5000 + "]" * 5000 + " }}"]
)
def test_deeply_nested_templates_fail_with_a_reason(source: str) -> None:
    with pytest.raises(TemplateError, match=r"^text: the template is nested too deeply$"):
        check_template("text", source)


def test_a_compiled_template_is_kept_and_reused_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "_compiled", OrderedDict())
    monkeypatch.setattr(render, "_compiled_chars", 0)
    first = render._compile("html", "<p>Hi {{ recipient.first_name }}</p>")
    assert render._compile("html", "<p>Hi {{ recipient.first_name }}</p>") is first
    # The same source in another field compiles in that field's environment (subject is not escaped).
    assert render._compile("subject", "<p>Hi {{ recipient.first_name }}</p>") is not first
    # Past the budget the oldest goes first.
    monkeypatch.setattr(render, "COMPILED_BUDGET", 80)
    render._compile("text", "x" * 60)
    assert render._compile("html", "<p>Hi {{ recipient.first_name }}</p>") is not first
    assert sum(len(source) for _, source in render._compiled) == render._compiled_chars <= 80


def test_a_template_that_fails_to_compile_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "_compiled", OrderedDict())
    for _ in range(2):
        with pytest.raises(TemplateError):
            render._compile("html", "{% if %}")
    assert not render._compiled
