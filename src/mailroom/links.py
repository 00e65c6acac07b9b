"""Public links: the tokens they carry, and keeping those tokens out of logs.

A public link (unsubscribe, invitation, confirmation, tracking) acts on what its token names with no
login, so the token is as good as a password for that one action: it must be opaque (no address in
a URL that passes through mail scanners and proxies) and it must not be written to access logs.
This module sits below the router modules so the sender can make links without importing routes.
"""

from __future__ import annotations

import re
import uuid

from mailroom.addresses import normalize
from mailroom.crypto import InvalidToken, SecretBox

UNSUBSCRIBE = "unsubscribe"

# Paths opened from an email, or by a browser coming back from a provider's consent screen: the
# link's own token (or OAuth state) is all the authority they take, no API token.
OAUTH_CALLBACKS = ("/users/self/google/callback", "/users/self/microsoft/callback")
# Stored files are fetched through links signed for one path until a moment (see files.storage).
LINK_ONLY_PREFIXES = ("/unsubscribe/", "/users/confirm/", "/t/", "/emails/view/", "/files/", *OAUTH_CALLBACKS)
# The workspace's pages: a browser posts their forms with a session cookie and a CSRF token, not an API token.
WORKSPACE_PREFIX = "/app/"
# A workspace sign-in link: the path's last segment signs a person in (once, within minutes).
SIGN_IN_PREFIX = "/app/sign-in/"
# Called by a provider, signed inside the body (no API token); their bodies are small too.
PROVIDER_WEBHOOKS = ("/emails/events",)
# Paths whose next segment (and anything after it) is a bearer token. A path is matched anywhere so
# a service mounted under a prefix (root_path) is covered too. For the OAuth callbacks that is the
# query string: its code and state redeem a mailbox connection.
PUBLIC_TOKEN_PREFIXES = (*LINK_ONLY_PREFIXES, "/invitations/", SIGN_IN_PREFIX)
REDACTED = "<redacted>"
_TOKEN_PATH = re.compile("(" + "|".join(re.escape(prefix) for prefix in PUBLIC_TOKEN_PREFIXES) + ").+")


# Between the brand and the address of a link that names its recipient row: an address holds no NUL.
_ROW_MARK = b"\0"


def unsubscribe_token(box: SecretBox, brand: uuid.UUID | str, address: str, recipient: uuid.UUID | None = None) -> str:
    """The token of one recipient's unsubscribe link in one brand, naming their recipient row when given
    (so the unsubscribe counts on that campaign).

    Deterministic and without expiry (AES-SIV, see SecretBox.seal_fixed): nothing is stored, and a link
    in a years-old newsletter still works, links made before rows were named among them.
    """
    brand_id = brand if isinstance(brand, uuid.UUID) else uuid.UUID(brand)
    row = b"" if recipient is None else _ROW_MARK + recipient.bytes
    return box.seal_fixed(UNSUBSCRIBE, brand_id.bytes + row + normalize(address).encode())


def unsubscribe_url(
    public_url: str, box: SecretBox, brand: uuid.UUID | str, address: str, recipient: uuid.UUID | None = None
) -> str:
    return f"{public_url.rstrip('/')}/unsubscribe/{unsubscribe_token(box, brand, address, recipient)}"


def read_unsubscribe_token(box: SecretBox, token: str) -> tuple[uuid.UUID, str, uuid.UUID | None]:
    """(brand, address, recipient row or None) of a token made by :func:`unsubscribe_token`; InvalidToken
    for anything else."""
    data = box.unseal_fixed(UNSUBSCRIBE, token)
    recipient = None
    if data[16:17] == _ROW_MARK:
        recipient, data = uuid.UUID(bytes=data[17:33]), data[:16] + data[33:]
    if len(data) <= 16:
        raise InvalidToken("invalid token")
    try:
        address = data[16:].decode()
    except UnicodeDecodeError:
        raise InvalidToken("invalid token") from None
    return uuid.UUID(bytes=data[:16]), address, recipient


def redact_path(path: str) -> str:
    """The path with the token of a public link (and whatever follows it) replaced by <redacted>."""
    return _TOKEN_PATH.sub(lambda match: match.group(1) + REDACTED, path)
