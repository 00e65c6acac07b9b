"""A campaign's attachments as MIME parts: uploaded files from storage, links fetched once.

Links are fetched by the server, so they are a way in for server-side request forgery: only http(s),
only public addresses (unless the operator allows private ones), bounded in size and time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import mimetypes
import socket
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.campaigns.service import MAILBOX_SIZE_LIMIT
from mailroom.files.storage import LocalStorage
from mailroom.sending.mime import Attachment

ATTACHMENTS = text(
    """
    SELECT a.url, a.name, a.is_inline, a.content_id, f.path, f.name AS file_name, f.mime
    FROM email_campaign_attachments a LEFT JOIN files f ON f.id = a.file
    WHERE a.campaign = :campaign AND a.deleted_at IS NULL
    ORDER BY a.created_at, a.id
    """
)


class AttachmentError(Exception):
    """An attachment cannot be had; the message is safe to show the user as the campaign's failure."""


@dataclass(frozen=True)
class Parts:
    inline: tuple[Attachment, ...] = ()
    attached: tuple[Attachment, ...] = ()


async def _public_host(host: str) -> None:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise AttachmentError(f"attachment link to {host} points to a private address")


async def fetch(url: str, *, limit: int, allow_private: bool) -> tuple[bytes, str | None]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AttachmentError("attachment links must be http(s) URLs")
    if not allow_private:
        await _public_host(parts.hostname)
    # Redirects are not followed: each hop would need the same address check.
    async with (
        httpx.AsyncClient(timeout=20.0, follow_redirects=False) as client,
        client.stream("GET", url) as response,
    ):
        if response.status_code != 200:
            raise AttachmentError(f"attachment link answered {response.status_code}: {url[:200]}")
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > limit:
                raise AttachmentError(f"attachment at {url[:200]} is larger than {limit} bytes")
        return bytes(data), response.headers.get("content-type")


def _content_type(declared: str | None, name: str) -> str:
    if declared and "/" in declared:
        return declared.split(";", 1)[0].strip()
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def load_parts(
    session: AsyncSession, campaign: uuid.UUID, storage: LocalStorage, *, allow_private_links: bool
) -> Parts:
    rows = (await session.execute(ATTACHMENTS, {"campaign": campaign})).all()
    if not rows:
        return Parts()
    inline: list[Attachment] = []
    attached: list[Attachment] = []
    total = 0
    for row in rows:
        if row.path is not None:
            name = row.file_name or "attachment"
            try:
                data = await asyncio.to_thread(storage.read, row.path)
            except (OSError, ValueError):
                raise AttachmentError(f"the uploaded file {name} is missing") from None
            declared = row.mime
        else:
            name = row.name or "attachment"
            data, declared = await fetch(row.url, limit=MAILBOX_SIZE_LIMIT, allow_private=allow_private_links)
        total += len(data)
        if total > MAILBOX_SIZE_LIMIT:
            raise AttachmentError("the attachments add up to more than the size limit")
        part = Attachment(name, _content_type(declared, name), data, row.content_id if row.is_inline else None)
        (inline if row.is_inline else attached).append(part)
    return Parts(tuple(inline), tuple(attached))
