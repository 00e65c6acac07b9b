"""The users' own mailboxes as transports: Gmail and Outlook, built per credential at send time.

A mailbox that the provider throttles (429, Retry-After) is paused on its credential row: every job
sending through it waits until then, and no campaign fails for it. Other mailboxes and the ESP go on.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.config import Settings
from mailroom.crypto import SecretBox
from mailroom.mailboxes.tokens import StoredTokens
from mailroom.transports.base import PermanentSendError, RouteOptions, TransientSendError, Transport
from mailroom.transports.gmail import GmailOptions, GmailTransport
from mailroom.transports.oauth import NotConfigured, OAuthClient
from mailroom.transports.outlook import OutlookOptions, OutlookTransport

MailboxKind = Literal["google", "microsoft"]


class SendsThroughMailbox(Protocol):
    """What of a campaign decides whether, and through which credential, it goes out through a mailbox."""

    @property
    def mailbox(self) -> MailboxKind | None: ...
    @property
    def credential(self) -> uuid.UUID | None: ...
    @property
    def shared(self) -> bool: ...
    @property
    def recipients_count(self) -> int: ...


# How long a throttled mailbox waits when the provider does not say.
DEFAULT_PAUSE = 60.0
LIMITS: dict[MailboxKind, int] = {
    "google": GmailTransport.capabilities.max_recipients_per_call,
    "microsoft": OutlookTransport.capabilities.max_recipients_per_call,
}
TABLES: dict[MailboxKind, str] = {"google": "google_credentials", "microsoft": "microsoft_credentials"}


def mailbox_options(kind: MailboxKind, headers: Mapping[str, str]) -> RouteOptions:
    """What a campaign's message carries to its mailbox, from the campaign's headers: the Gmail thread it
    joins (``thread_id``), or the Outlook message it answers (``message_id``)."""
    if kind == "google":
        return GmailOptions(thread_id=headers.get("thread_id"))
    return OutlookOptions(reply_to_id=headers.get("message_id"))


class Paused(Exception):
    """The campaign's mailbox is paused until ``retry_after`` seconds from now; run the job again then.

    Waiting for a provider's throttling is not a failed attempt: the job's retries do not count it.
    """

    def __init__(self, reason: str, *, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Mailboxes:
    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], box: SecretBox) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._box = box
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))

    def takes(self, campaign: SendsThroughMailbox) -> bool:
        """Whether the campaign goes out through its mailbox: one shared message within the mailbox's limit."""
        return (
            campaign.mailbox is not None
            and campaign.credential is not None
            and campaign.shared
            and campaign.recipients_count <= LIMITS[campaign.mailbox]
        )

    @asynccontextmanager
    async def open(self, campaign: SendsThroughMailbox) -> AsyncIterator[Transport]:
        """The transport of the campaign's mailbox; Paused while the provider has it throttled."""
        kind, credential = campaign.mailbox, campaign.credential
        assert kind is not None and credential is not None
        await self._check_paused(kind, credential)
        async with self.gmail_or_outlook(kind, credential) as transport:
            yield transport

    @asynccontextmanager
    async def gmail_or_outlook(
        self, kind: MailboxKind, credential: uuid.UUID
    ) -> AsyncIterator[GmailTransport | OutlookTransport]:
        """The transport of one credential, acting with its stored (and refreshed) tokens."""
        try:
            oauth = OAuthClient.from_settings(self._settings, kind)
        except NotConfigured as exc:
            # Tokens expire within the hour: without the server's OAuth client no mailbox can be used for long.
            raise PermanentSendError(f"this server is not set up for connected mailboxes: {exc}") from exc
        tokens = StoredTokens(self._sessionmaker, self._box, oauth, self._http, kind=kind, credential_id=credential)
        transport: GmailTransport | OutlookTransport
        if kind == "google":
            transport = GmailTransport(api_url=self._settings.google_api_url, tokens=tokens, client=self._http)
        else:
            transport = OutlookTransport(graph_url=self._settings.microsoft_graph_url, tokens=tokens, client=self._http)
        try:
            yield transport
        finally:
            await transport.aclose()

    async def pause(self, campaign: SendsThroughMailbox, error: TransientSendError) -> Paused:
        """Pause the campaign's mailbox as long as the provider asked; the Paused to raise for the job."""
        kind, credential = campaign.mailbox, campaign.credential
        assert kind is not None and credential is not None
        wait = error.retry_after if error.retry_after is not None else DEFAULT_PAUSE
        until = datetime.now(UTC) + timedelta(seconds=wait)
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                text(f"UPDATE {TABLES[kind]} SET paused_until = greatest(paused_until, :until) WHERE id = :id"),
                {"until": until, "id": credential},
            )
        return Paused(f"{kind} mailbox {credential} paused for {wait:.0f} s: {error.reason}", retry_after=wait)

    async def _check_paused(self, kind: MailboxKind, credential: uuid.UUID) -> None:
        async with self._sessionmaker() as session:
            seconds = (
                await session.execute(
                    text(f"SELECT extract(epoch FROM paused_until - now()) FROM {TABLES[kind]} WHERE id = :id"),
                    {"id": credential},
                )
            ).scalar_one_or_none()
        if seconds is not None and float(seconds) > 0:
            raise Paused(f"{kind} mailbox {credential} is paused", retry_after=float(seconds))

    async def aclose(self) -> None:
        await self._http.aclose()
