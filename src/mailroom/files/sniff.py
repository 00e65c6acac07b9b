"""The type of an uploaded file, read from its first bytes: what the client claims is not trusted.

A stored type is served back in Content-Type, so a file claiming to be an image while holding a page
of script must not keep its claim. Only the common kinds are told apart; the rest is octet-stream.
"""

from __future__ import annotations

# Bytes of the start of a file the sniffer needs to see.
SNIFF_BYTES = 4096
OCTET_STREAM = "application/octet-stream"

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)
# Office documents are zip archives; which one is told by the name the client gave, once the content is a zip.
_OOXML = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "application/zip": "zip",
    "text/plain": "txt",
    "text/html": "html",
    **{mime: ext for ext, mime in _OOXML.items()},
}
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<div", b"<p>", b"<table", b"<script")
# Control characters that never appear in text (tab, line feed, form feed, carriage return and escape do).
_BINARY = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D, 0x1B}


def sniff(head: bytes, name: str = "") -> str:
    """The type of a file starting with ``head`` (its first SNIFF_BYTES, or all of it when shorter)."""
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _OOXML.get(name.rsplit(".", 1)[-1].lower(), "application/zip") if "." in name else "application/zip"
    return _text_type(head)


def _text_type(head: bytes) -> str:
    if not head or any(byte in _BINARY for byte in head):
        return OCTET_STREAM
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The head may end in the middle of a character; anything else is not UTF-8 text.
        if exc.start < len(head) - 3:
            return OCTET_STREAM
        text = head[: exc.start].decode("utf-8")
    start = text.removeprefix("\ufeff").lstrip().lower().encode()
    return "text/html" if start.startswith(_HTML_STARTS) else "text/plain"


def extension(mime: str) -> str:
    return EXTENSIONS.get(mime, "bin")
