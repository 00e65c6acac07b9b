"""Our own open and click tracking, for transports without their own (SMTP, outbox, Gmail, Outlook).

Each ``<a href="http(s)://...">`` of a message's html becomes ``{public_url}/t/c/<token>`` and a 1x1
pixel ``{public_url}/t/o/<token>`` goes before ``</body>``. A token names the emails row and the link's
position, signed: the redirect goes only to a link stored with that email (``emails.links``), never to
a URL taken from the request. Unsubscribe links, ``mailto:``, ``tel:``, anchors and other non-http
links are left as they are, and so is the plain text part (its links stay the sender's own).

The html is the user's: the scan is linear whatever it holds (possessive patterns, no backtracking),
and a tag left open at the end of the document ends the rewriting, as it ends the document for a browser.

Tokens are compact and never expire (mail lives long): base64url of the 16-byte id, a 2-byte index
and a 96-bit HMAC-SHA256 under a key of their own purpose (one for clicks, one for opens, one for the
view-in-browser link). One HMAC per link, from the keyed inner and outer hash states computed once
(RFC 2104 by hand: the hmac module re-keys on every call, which costs more than the hash itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html as html_lib
import re
import uuid
from dataclasses import dataclass

from mailroom.crypto import InvalidToken, SecretBox

CLICK_PURPOSE = "tracking-click"
OPEN_PURPOSE = "tracking-open"
VIEW_PURPOSE = "email-view"
_MAC_BYTES = 12
# 16 + 2 + 12 = 30 bytes: 40 base64 characters, no padding, and no spare bits (one encoding per token).
_TOKEN_CHARS = 40
# 16 + 1 + 16 = 33 bytes: 44 characters.
_VIEW_MAC_BYTES = 16
_VIEW_CHARS = 44
MAX_LINKS = 0xFFFF

# The start of an <a> tag, then the rest of it up to its '>' outside quotes, capturing its href. Each
# step of the repetition begins with a different character class and is possessive: nothing is retried.
_A_START = re.compile(r"<a[\s/>]", re.IGNORECASE)
_A_REST = re.compile(
    r"""(?:(?<=[\s/"'])href\s*+=\s*+(?:"(?P<dq>[^"]*+)"|'(?P<sq>[^']*+)'|(?P<uq>[^\s"'>]++))"""
    r"""|"[^"]*+"|'[^']*+'|[^"'>])*+>""",
    re.IGNORECASE,
)
_BODY_END = re.compile(r"</body\s*+>", re.IGNORECASE)
_PIXEL_STYLE = "display:block;width:1px;height:1px;border:0;margin:0;padding:0"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _unb64(token: str, chars: int) -> bytes:
    if len(token) != chars:
        raise InvalidToken("invalid token")
    try:
        # Lengths without padding and without spare bits: a valid token has exactly one spelling.
        return base64.b64decode(token, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidToken("invalid token") from None


class _Keyed:
    """HMAC-SHA256 under one key, its two padded-key states hashed once (RFC 2104)."""

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\0")  # purpose keys are 32 bytes, under SHA-256's 64-byte block
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def mac(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class TrackingTokens:
    """Makes and reads the tokens of tracked links, pixels and view-in-browser links."""

    def __init__(self, box: SecretBox) -> None:
        self._click = _Keyed(box.key_for(CLICK_PURPOSE))
        self._open = _Keyed(box.key_for(OPEN_PURPOSE))
        self._view = _Keyed(box.key_for(VIEW_PURPOSE))

    @staticmethod
    def _mac(keyed: _Keyed, data: bytes, size: int) -> bytes:
        return keyed.mac(data)[:size]

    def _make(self, keyed: _Keyed, email: uuid.UUID, index: int) -> str:
        data = email.bytes + index.to_bytes(2, "big")
        return _b64(data + self._mac(keyed, data, _MAC_BYTES))

    def _read(self, keyed: _Keyed, token: str) -> tuple[uuid.UUID, int]:
        raw = _unb64(token, _TOKEN_CHARS)
        data, mac = raw[:18], raw[18:]
        if not hmac.compare_digest(mac, self._mac(keyed, data, _MAC_BYTES)):
            raise InvalidToken("invalid token")
        return uuid.UUID(bytes=data[:16]), int.from_bytes(data[16:18], "big")

    def click(self, email: uuid.UUID, index: int) -> str:
        return self._make(self._click, email, index)

    def read_click(self, token: str) -> tuple[uuid.UUID, int]:
        """(emails row id, link index) of a click token; InvalidToken for anything else."""
        return self._read(self._click, token)

    def open(self, email: uuid.UUID) -> str:
        return self._make(self._open, email, 0)

    def read_open(self, token: str) -> uuid.UUID:
        email, index = self._read(self._open, token)
        if index:
            raise InvalidToken("invalid token")
        return email

    def view(self, campaign_email: uuid.UUID, *, personal: bool) -> str:
        """The token of a view-in-browser link: one recipient row, and whether its mail was rendered for it
        (an individual message) or for everyone at once (a shared one, without recipient variables)."""
        data = campaign_email.bytes + (b"\x01" if personal else b"\x00")
        return _b64(data + self._mac(self._view, data, _VIEW_MAC_BYTES))

    def read_view(self, token: str) -> tuple[uuid.UUID, bool]:
        raw = _unb64(token, _VIEW_CHARS)
        data, mac = raw[:17], raw[17:]
        if data[16] > 1 or not hmac.compare_digest(mac, self._mac(self._view, data, _VIEW_MAC_BYTES)):
            raise InvalidToken("invalid token")
        return uuid.UUID(bytes=data[:16]), data[16] == 1


def view_url(public_url: str, tokens: TrackingTokens, campaign_email: uuid.UUID, *, personal: bool) -> str:
    return f"{public_url.rstrip('/')}/emails/view/{tokens.view(campaign_email, personal=personal)}"


@dataclass(frozen=True, slots=True)
class Tracked:
    """A message's html with its links and pixel in place, and the original links in order."""

    html: str
    links: list[str]


def _tracked_target(url: str, unsubscribe_prefix: str) -> bool:
    """Whether a link is one to track: http(s), and not an unsubscribe link (ours or anyone's)."""
    head = url[:8].lower()
    if not (head.startswith("http://") or head.startswith("https://")):
        return False  # mailto:, tel:, #anchors, relative and other schemes
    if url.startswith(unsubscribe_prefix) or "unsubscribe" in url.lower():
        return False
    # A placeholder something else substitutes later ({{...}} left in by a template) is not a link yet.
    return "{{" not in url


class LinkRewriter:
    """Rewrites the html of one message after another; built once per worker (keys derived once)."""

    def __init__(self, tokens: TrackingTokens, public_url: str) -> None:
        self.tokens = tokens
        base = public_url.rstrip("/")
        self._click_prefix = f"{base}/t/c/"
        self._open_prefix = f"{base}/t/o/"
        self._unsubscribe_prefix = f"{base}/unsubscribe/"

    def rewrite(self, html: str, email: uuid.UUID) -> Tracked:
        """Each tracked link through /t/c/, the pixel before </body> (or at the end)."""
        pieces: list[str] = []
        links: list[str] = []
        last = 0
        pos = 0
        find_start, match_rest = _A_START.search, _A_REST.match
        while len(links) < MAX_LINKS:
            start = find_start(html, pos)
            if start is None:
                break
            tag = match_rest(html, start.end() - 1)
            if tag is None:
                break  # a tag open to the end of the document: nothing after it is a link
            pos = tag.end()
            group = "dq" if tag.start("dq") >= 0 else "sq" if tag.start("sq") >= 0 else "uq"
            value_start, value_end = tag.span(group)
            if value_start < 0:
                continue
            raw = html[value_start:value_end]
            # What a browser follows: the attribute with its character references decoded.
            url = (html_lib.unescape(raw) if "&" in raw else raw).strip()
            if not _tracked_target(url, self._unsubscribe_prefix):
                continue
            pieces.append(html[last:value_start])
            pieces.append(self._click_prefix + self.tokens.click(email, len(links)))
            links.append(url)
            last = value_end
        pixel = (
            f'<img src="{self._open_prefix}{self.tokens.open(email)}" width="1" height="1" alt="" '
            f'style="{_PIXEL_STYLE}">'
        )
        at = len(html)
        for body_end in _BODY_END.finditer(html, last):
            at = body_end.start()  # the last one: an html with a </body> in a comment still gets it at the end
        pieces.append(html[last:at])
        pieces.append(pixel)
        pieces.append(html[at:])
        return Tracked("".join(pieces), links)
