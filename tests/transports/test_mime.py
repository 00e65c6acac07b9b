import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any, cast

import pytest

from mailroom.transports.mime import Attachment, build_message, make_message_id

PARAGRAPH = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do.</p>\n"
HTML = "<html><body>" + PARAGRAPH * 28 + "</body></html>"
TEXT = "Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do.\n" * 16
ROW_ID = uuid.UUID("7d3f0b7c-1111-2222-3333-444455556666")


def build(**overrides: Any) -> bytes:
    args: dict[str, Any] = {
        "from_addr": "Bob Ray <bob@example.com>",
        "to": ["Ann Lee <ann@example.com>"],
        "cc": [],
        "subject": "Monthly news",
        "text": TEXT,
        "html": HTML,
        "message_id": make_message_id(ROW_ID, "mail.example.com"),
        "date": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "headers": {},
        "inline": [],
        "attachments": [],
    }
    args.update(overrides)
    return build_message(**args)


def parse(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, BytesParser(policy=default_policy).parsebytes(raw))


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def assert_crlf_only(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")


def test_text_and_html_alternative() -> None:
    headers = {
        "Feedback-ID": "rechat:brand-1:rechat",
        "List-Unsubscribe": "<https://mail.example.com/unsubscribe/" + "a" * 20 + ">, <mailto:u@example.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "In-Reply-To": "<parent@example.com>",
        "References": "<root@example.com> <parent@example.com>",
    }
    raw = build(cc=["Cy <cy@example.com>", "dee@example.com"], headers=headers)
    assert_crlf_only(raw)
    assert all(len(line) <= 78 for line in header_lines(raw))  # List-Unsubscribe is folded
    assert b">,\r\n <mailto:u@example.com>\r\n" in raw
    msg = parse(raw)
    assert msg.defects == []
    assert msg["From"] == "Bob Ray <bob@example.com>"
    assert msg["To"] == "Ann Lee <ann@example.com>"
    assert msg["Cc"] == "Cy <cy@example.com>, dee@example.com"
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Monthly news"
    assert msg["Date"] == "Mon, 06 May 2024 07:08:09 +0000"
    assert msg["Message-ID"] == "<7d3f0b7c-1111-2222-3333-444455556666@mail.example.com>"
    assert msg["MIME-Version"] == "1.0"
    for name, value in headers.items():
        assert msg[name] == value
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.iter_parts()
    assert (plain.get_content_type(), plain["Content-Transfer-Encoding"]) == ("text/plain", "7bit")
    assert (html.get_content_type(), html["Content-Transfer-Encoding"]) == ("text/html", "7bit")
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    assert plain.get_content() == TEXT.replace("\n", "\r\n")
    assert html.get_content() == HTML.replace("\n", "\r\n")


def test_text_only_message_is_a_single_part() -> None:
    msg = parse(build(html=None, text="Just text, no newline"))
    assert not msg.is_multipart()
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Just text, no newline\r\n"


def test_non_ascii_names_subject_and_bodies() -> None:
    subject = "Grüße aus Köln — 東京の春 and a subject long enough to need more than one encoded word"
    text = "Héllo, this is an ordinary sentence with one accent.\n" * 20
    html = "<p>東京の春は美しい</p>" * 30
    raw = build(
        from_addr="Zoë Ünal <zoe@example.com>",
        to=["Jürgen Groß <jurgen@example.com>", "Lee, Ann <ann@example.com>", '"Q. Public" <q@example.com>'],
        subject=subject,
        text=text,
        html=html,
        headers={"X-Campaign": "Frühling", "X-A-Rather-Long-Header-Name": "Größe " * 20},
    )
    assert raw.isascii()
    assert all(len(line) <= 76 for line in header_lines(raw) if b"=?utf-8?" in line)  # RFC 2047
    assert all(len(line) <= 78 for line in header_lines(raw))
    assert b"=?utf-8?b?" in raw
    msg = parse(raw)
    assert msg["Subject"] == subject
    assert msg["From"].addresses[0].display_name == "Zoë Ünal"
    to = [(a.display_name, a.addr_spec) for a in msg["To"].addresses]
    assert to == [
        ("Jürgen Groß", "jurgen@example.com"),
        ("Lee, Ann", "ann@example.com"),
        ("Q. Public", "q@example.com"),
    ]
    assert msg["X-Campaign"] == "Frühling"
    assert msg["X-A-Rather-Long-Header-Name"] == ("Größe " * 20).strip()
    plain, html_part = msg.iter_parts()
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"  # mostly ASCII: QP is smaller
    assert html_part["Content-Transfer-Encoding"] == "base64"  # mostly not: base64 is smaller
    assert plain.get_content() == text.replace("\n", "\r\n")
    assert html_part.get_content() == html


def test_long_ascii_lines_are_not_sent_as_7bit() -> None:
    html = "<p>" + "x" * 1500 + "</p>"
    msg = parse(build(html=html))
    part = msg.get_body(("html",))
    assert part is not None
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert part.get_content() == html


def test_header_injection_is_neutralised() -> None:
    raw = build(
        subject="Hello\r\nBcc: victim@evil.test\r\n\r\nbody",
        to=["Ann\r\nBcc: victim@evil.test <ann@example.com>"],
        headers={"X-Note": "a\nBcc: victim@evil.test", "References": "<a@b>\r\n\r\ninjected body"},
    )
    msg = parse(raw)
    assert msg.defects == []
    assert msg["Bcc"] is None
    names = [name.lower() for name in msg]
    assert names.count("subject") == 1 and "bcc" not in names
    assert msg["Subject"] == "Hello Bcc: victim@evil.test body"
    assert [a.addr_spec for a in msg["To"].addresses] == ["ann@example.com"]
    assert msg["X-Note"] == "a Bcc: victim@evil.test"
    assert msg.get_body(("plain",)).get_content() == TEXT.replace("\n", "\r\n")  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        build(headers={"Bcc": "x@example.com"})
    with pytest.raises(ValueError):
        build(headers={"X-Bad\r\nBcc": "x"})


def test_inline_parts_and_attachments() -> None:
    logo = bytes(range(256)) * 40
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 100
    raw = build(
        html='<p>Hi <img src="cid:logo"></p>',
        inline=[Attachment("logo.png", "image/png", logo, "logo"), Attachment("banner.gif", "image/gif", b"GIF89a")],
        attachments=[
            Attachment("Résumé été 2024.pdf", "application/pdf", pdf),
            Attachment("notes.txt", "text/plain", b"plain notes\n"),
            Attachment("../../etc/passwd\r\n", "bogus type", b"data"),
        ],
    )
    assert_crlf_only(raw)
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    related, *attached = msg.iter_parts()
    assert related.get_content_type() == "multipart/related"
    alternative, logo_part, banner_part = related.iter_parts()
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert alternative.get_body(("html",)).get_content() == '<p>Hi <img src="cid:logo"></p>'  # type: ignore[union-attr]
    assert logo_part["Content-ID"] == "<logo>"
    assert logo_part.get_content_disposition() == "inline"
    assert logo_part.get_filename() == "logo.png"
    assert logo_part.get_content() == logo
    assert banner_part["Content-ID"] == "<banner.gif>"  # no content id: the file name, as Mailgun does
    resume, notes, odd = attached
    assert resume.get_content_disposition() == "attachment"
    assert resume.get_filename() == "Résumé été 2024.pdf"
    assert resume.get_content_type() == "application/pdf"
    assert resume["Content-Transfer-Encoding"] == "base64"
    assert resume.get_content() == pdf
    assert notes.get_filename() == "notes.txt"
    assert notes.get_payload(decode=True) == b"plain notes\n"
    assert odd.get_filename() == "passwd"
    assert odd.get_content_type() == "application/octet-stream"
    assert all(not part.defects for part in msg.walk())


def test_date_forms() -> None:
    assert parse(build(date=0.0))["Date"] == "Thu, 01 Jan 1970 00:00:00 +0000"
    assert parse(build(date=datetime(2024, 1, 2, 3, 4, 5)))["Date"] == "Tue, 02 Jan 2024 03:04:05 +0000"
    paris = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert parse(build(date=paris))["Date"] == "Tue, 02 Jan 2024 03:04:05 +0100"


def test_make_message_id_is_stable() -> None:
    assert make_message_id(ROW_ID, "Mail.Example.com") == f"<{ROW_ID}@mail.example.com>"
    assert make_message_id(str(ROW_ID), "mail.example.com") == make_message_id(ROW_ID, "mail.example.com")
    assert make_message_id("abc", "bücher.example") == "<abc@xn--bcher-kva.example>"
    for bad_id in ("a b", "<x>", "", "a..b"):
        with pytest.raises(ValueError):
            make_message_id(bad_id, "example.com")


def test_boundaries_differ_between_messages() -> None:
    first, second = build(), build()
    boundary = re.compile(rb'boundary="([^"]+)"')
    assert boundary.search(first) != boundary.search(second)
