"""The one interface every transport implements, and the shapes it exchanges.

Contract of ``send_many(messages)``:

* It returns one ``SendResult`` per message, in the order given, keyed by
  ``OutgoingMessage.key`` (the email_campaign_email id the result belongs to).
* ``provider_id`` set: the provider accepted the message. Store it; the row must never be
  sent again. ``error`` may still be set when the provider accepted the message for some
  recipients and refused others: it lists the refused ones.
* ``provider_id`` None and ``error`` set: not sent. ``permanent`` True means retrying cannot
  help (SMTP 5xx for every recipient, Mailgun 400): record the error on the row.
  ``permanent`` False means retry later (SMTP 4xx, dropped connection, HTTP 429/5xx).
* It raises ``TransientSendError`` when the provider could not be used at all and nothing
  in the call was accepted (server unreachable, rate limited, 5xx): retry the whole call
  later, no sooner than ``retry_after`` when given. It raises ``PermanentSendError`` for a
  call-wide failure that retrying will not fix (rejected credentials, unknown domain),
  with a ``reason`` that can be shown to the user as the campaign's failure.
* A message dropped mid-DATA (connection lost after the body was sent) is reported as a
  transient failure, although the server may have kept it: SMTP cannot tell.

Each transport declares what it can do in ``capabilities`` (``Capabilities``); the sender, the API
and the domains service ask those rather than which transport it is.

``builds_from_fields`` True: the transport builds its messages from ``OutgoingMessage.content``
(Mailgun batch sending, Graph), so the sender may leave ``message`` None for mail to one recipient
each; a shared message (one for many recipients) always comes with its MIME as well.

``max_recipients_per_call`` is the most recipients one ``send_many`` call may address: the sender
sends individual mail in calls of at most that many, and sends a campaign through a mailbox
(Gmail, Outlook) only when all of its recipients fit in one of that mailbox's messages.

Mailbox transports (Gmail, Outlook) are built per credential at send time and act with a
``TokenSource``: they ask it for an access token before each call, and once more with
``refresh=True`` when the provider answers 401 to a token it gave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mailroom.transports.mime import Attachment

# What a campaign's attachments may total: through any ESP (the service's own limit, below what the ESPs
# themselves take) and through a user's own mailbox. Checked when a campaign is saved and when it is sent.
ESP_SIZE_LIMIT = 15 * 1024 * 1024
MAILBOX_SIZE_LIMIT = 26 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can do, declared once on its class."""

    # The most recipients one ``send_many`` call may address (see the module docstring).
    max_recipients_per_call: int
    # What a campaign's attachments may total on this route.
    size_limit: int = ESP_SIZE_LIMIT
    # Builds its messages from ``OutgoingMessage.content``; MIME may be left out (see the module docstring).
    builds_from_fields: bool = False
    # Tracks opens and clicks itself, asked through ``OutgoingMessage.tracking``; the sender rewrites
    # links and adds its pixel only for transports that do not.
    tracks_itself: bool = False
    # Sends for a user's own domain only once that domain is set up and verified with the provider
    # (Mailgun's domains); otherwise mail From a verified domain is signed with the domain's own DKIM key.
    verifies_domains: bool = False
    # A user's own mailbox (Gmail, Outlook), built per credential, rather than the service's ESP.
    mailbox: bool = False


class SendError(Exception):
    """A send failure; ``reason`` is safe to show a user."""

    permanent = False

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class TransientSendError(SendError):
    """Retry later: SMTP 4xx, connection errors, timeouts, HTTP 429/5xx."""


class PermanentSendError(SendError):
    """Retrying will not help: SMTP 5xx, rejected credentials, a request the provider refuses."""

    permanent = True


@dataclass(frozen=True, slots=True)
class MessageContent:
    """A message as fields, for APIs that build the message themselves (Microsoft Graph).

    ``inline`` are the parts the html shows (``cid:<content_id>``), ``attachments`` the others.
    ``headers`` are the extra headers the MIME form carries (List-Unsubscribe, Reply-To, ...).
    """

    from_addr: str
    subject: str
    html: str | None
    text: str
    to: Sequence[str]
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    attachments: Sequence[Attachment] = ()
    inline: Sequence[Attachment] = ()
    headers: Mapping[str, str] = field(default_factory=dict)


class RouteOptions:
    """What one transport alone reads from a message: each transport module subclasses it with a frozen
    dataclass of its own (the Gmail thread to join, the Outlook message answered, the Mailgun domain to
    send through), so the message itself stays the same for every route. A transport ignores options
    that are not its own."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One rendered message for a transport.

    ``recipients`` are all RCPT TO addresses (To, Cc and Bcc, bare addresses).
    ``message`` is the MIME message, as bytes or as consecutive byte segments whose large
    ones (attachment parts) are shared by every message of a campaign: a transport writes
    the segments one after the other and joins them only where an API needs one buffer.
    It is None when the transport builds its messages from ``content`` (``builds_from_fields``).
    ``tags`` and ``variables`` are provider metadata (Mailgun ``o:tag`` / ``v:name``, seen
    again in its webhooks); transports that relay raw MIME ignore them.
    """

    key: str
    envelope_from: str
    recipients: Sequence[str]
    message: bytes | tuple[bytes, ...] | None
    tags: Sequence[str] = ()
    variables: Mapping[str, str] = field(default_factory=dict)
    # The same message as fields, for transports that take fields rather than MIME (Graph).
    content: MessageContent | None = None
    # Ask a provider that tracks opens and clicks itself (Mailgun) to do so; the others ignore it.
    tracking: bool = False
    # What only the transport of the message's route reads (GmailOptions, OutlookOptions, MailgunOptions).
    options: RouteOptions | None = None

    @property
    def segments(self) -> tuple[bytes, ...]:
        if self.message is None:
            raise ValueError(f"message {self.key} was given as fields only")
        return (self.message,) if isinstance(self.message, bytes) else self.message

    def joined(self) -> bytes:
        """The message in one buffer: a copy of the shared parts, so only for one message at a time."""
        return self.message if isinstance(self.message, bytes) else b"".join(self.segments)


@dataclass(frozen=True, slots=True)
class SendResult:
    key: str
    provider_id: str | None
    error: str | None = None
    permanent: bool = False
    # Gmail: the thread the sent message belongs to.
    thread_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.provider_id is not None


@runtime_checkable
class Transport(Protocol):
    """What the sending pipeline needs from Mailgun, SMTP, Gmail, Outlook or the outbox."""

    name: str
    capabilities: Capabilities

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]: ...

    async def aclose(self) -> None: ...


class TokenSource(Protocol):
    """Where a mailbox transport gets its OAuth access token.

    ``refresh=True``: the provider refused the token last given (401); get a new one. A credential
    the provider no longer honours (``invalid_grant``) raises ``PermanentSendError`` naming what the
    user must do ("reconnect your Gmail account").
    """

    async def access_token(self, *, refresh: bool = False) -> str: ...


class HeldToken:
    """A TokenSource's token as one mailbox transport holds it: requests in flight together share it, and
    share one refresh when the provider refuses it (the first to see it refused asks, the others take it)."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source
        self._lock = asyncio.Lock()
        self.token: str | None = None

    async def get(self, *, refused: str | None = None) -> str:
        """The token to use; with ``refused``, one other than that token the provider answered 401 to.

        A PermanentSendError from the source (access revoked) propagates as it is.
        """
        async with self._lock:
            if self.token is None or (refused is not None and refused == self.token):
                self.token = await self._source.access_token(refresh=refused is not None)
            return self.token

    async def renew(self) -> str:
        """Ask the source again, as at the start of a call: it refreshes a token about to expire."""
        async with self._lock:
            self.token = await self._source.access_token()
            return self.token


def settle(messages: Sequence[OutgoingMessage], outcomes: Sequence[SendResult | SendError]) -> list[SendResult]:
    """Turn per-message outcomes into the answer of the whole call described in the module docstring.

    An outcome that is a ``SendError`` is a failure that was not about that message
    (connection refused, 429, bad credentials). When every message ended that way the
    call as a whole failed, and that error is raised, so the caller retries or fails
    the call once instead of marking each row.
    """
    errors = [o for o in outcomes if isinstance(o, SendError)]
    if outcomes and len(errors) == len(outcomes):
        permanent = [e for e in errors if e.permanent]
        if permanent:
            raise permanent[0]
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        raise TransientSendError(errors[0].reason, retry_after=max(waits) if waits else None)
    return [
        SendResult(m.key, None, o.reason, o.permanent) if isinstance(o, SendError) else o
        for m, o in zip(messages, outcomes, strict=True)
    ]


async def send_one(transport: Transport, message: OutgoingMessage) -> SendResult:
    """``send()`` in terms of ``send_many()``: raise unless the message was accepted."""
    (result,) = await transport.send_many([message])
    if result.provider_id is None:
        error = PermanentSendError if result.permanent else TransientSendError
        raise error(result.error or "not sent")
    return result
