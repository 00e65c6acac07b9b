"""A campaign's attachments as MIME parts: uploaded files from storage, links fetched once.

Links are fetched by the server, so they are a way in for server-side request forgery: only http(s),
only public addresses (unless the operator allows private ones), bounded in size and time.
"""

from __future__ import annotations

import asyncio
import mimetypes
import socket
import ssl
import uuid
from dataclasses import dataclass
from datetime import datetime
from ipaddress import ip_address

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.egress import IPAddress, link_problem, literal_address, refused
from mailroom.files.storage import FileMissing, Storage, read_all
from mailroom.transports.base import MAILBOX_SIZE_LIMIT
from mailroom.transports.mime import Attachment, encode_part

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
    """A campaign's attachments: as files (for APIs that take files) and as MIME parts encoded once,
    which every message built from them shares (``mime.build_segments``)."""

    inline: tuple[Attachment, ...] = ()
    attached: tuple[Attachment, ...] = ()
    inline_parts: tuple[bytes, ...] = ()
    attached_parts: tuple[bytes, ...] = ()


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` stands for, in the resolver's order: the one place a link's host is resolved.

    A literal address is read here, not by the resolver, so what is checked is what is connected to.
    """
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    # A resolver failure (OSError) may be passing: the send job retries it.
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for info in infos:
        address = ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def fetch(
    url: str, *, limit: int, allow_private: bool, deadline: float = 30.0, tls: ssl.SSLContext | None = None
) -> tuple[bytes, str | None]:
    """The body and declared content type behind ``url``; AttachmentError when it cannot or must not be had.

    The host is resolved once, every address it resolves to is checked, and the connection goes to a
    checked address with the link's host name in ``Host`` and TLS SNI (and the certificate checked
    against that name): a resolver that answers differently the second time (DNS rebinding) gets no
    second chance. ``deadline`` bounds the whole download, not each read, so a server that trickles
    bytes cannot hold the worker. ``tls`` replaces the default certificate checks (tests).
    """
    problem = link_problem(url, allow_private=allow_private)
    if problem is not None:
        raise AttachmentError(f"attachment link {url[:200]} {problem}")
    target = httpx.URL(url.strip())
    host = target.raw_host.decode("ascii")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        async with asyncio.timeout(deadline):
            addresses = await resolve(host, port)
            if not allow_private and any(refused(a) for a in addresses):
                raise AttachmentError(f"attachment link to {host[:200]} points to a private address")
            return await _download(target, addresses, limit=limit, deadline=deadline, tls=tls)
    except TimeoutError:
        raise AttachmentError(f"attachment at {url[:200]} did not download within {deadline:g} s") from None


async def _download(
    target: httpx.URL, addresses: list[IPAddress], *, limit: int, deadline: float, tls: ssl.SSLContext | None
) -> tuple[bytes, str | None]:
    host = target.raw_host.decode("ascii")
    # The name goes in Host and SNI; only a host name can be SNI (RFC 6066).
    extensions = {"sni_hostname": host} if literal_address(host) is None else {}
    headers = {"Host": target.netloc.decode("ascii"), "Accept-Encoding": "identity"}
    # No proxy from the environment (it would resolve the name itself), no redirects (each hop
    # would need the same checks).
    async with httpx.AsyncClient(
        timeout=deadline, follow_redirects=False, trust_env=False, verify=tls if tls is not None else True
    ) as client:
        for index, address in enumerate(addresses):
            request = client.build_request(
                "GET", target.copy_with(host=str(address)), headers=headers, extensions=extensions
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError:
                if index + 1 < len(addresses):
                    continue  # this address is unreachable from here (no IPv6 route, say): try the next
                raise
            try:
                return await _read(response, target, limit)
            finally:
                await response.aclose()
    raise AssertionError("resolve() answers at least one address")


async def _read(response: httpx.Response, target: httpx.URL, limit: int) -> tuple[bytes, str | None]:
    where = str(target)[:200]
    if response.status_code != 200:
        raise AttachmentError(f"attachment link answered {response.status_code}: {where}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AttachmentError(f"attachment at {where} is larger than {limit} bytes")
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            raise AttachmentError(f"attachment at {where} is larger than {limit} bytes")
    return bytes(data), response.headers.get("content-type")


def _content_type(declared: str | None, name: str) -> str:
    if declared and "/" in declared:
        return declared.split(";", 1)[0].strip()
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def load_parts(
    sessionmaker: async_sessionmaker[AsyncSession],
    campaign: uuid.UUID,
    storage: Storage,
    *,
    allow_private_links: bool,
    deadline: float,
) -> Parts:
    """The campaign's attachments, read or fetched, and their MIME parts encoded once for all its messages."""
    # The rows are read and the connection given back before any download, which can take ``deadline``.
    async with sessionmaker() as session:
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
                # Read in chunks through the storage (a folder or an object store); MIME needs it whole.
                data = await read_all(storage, row.path)
            except (FileMissing, OSError):
                raise AttachmentError(f"the uploaded file {name} is missing") from None
            declared = row.mime
        else:
            name = row.name or "attachment"
            # Only what is left of the size budget is downloaded.
            data, declared = await fetch(
                row.url,
                limit=max(MAILBOX_SIZE_LIMIT - total, 0),
                allow_private=allow_private_links,
                deadline=deadline,
            )
        total += len(data)
        if total > MAILBOX_SIZE_LIMIT:
            raise AttachmentError("the attachments add up to more than the size limit")
        part = Attachment(name, _content_type(declared, name), data, row.content_id if row.is_inline else None)
        (inline if row.is_inline else attached).append(part)
    # base64 of megabytes takes milliseconds: off the event loop that runs the other send jobs.
    encoded = await asyncio.to_thread(
        lambda: (
            tuple(encode_part(item, inline=True) for item in inline),
            tuple(encode_part(item, inline=False) for item in attached),
        )
    )
    return Parts(tuple(inline), tuple(attached), *encoded)


class AttachmentCache:
    """Each campaign's attachments, read (or fetched) and encoded once per worker, not once per slice.

    Slices of one campaign running at the same time wait for the same load instead of each holding its
    own copy; a failed load is not kept, so a retry tries again.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        storage: Storage,
        *,
        allow_private_links: bool = False,
        deadline: float = 30.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._storage = storage
        self._allow_private_links = allow_private_links
        self._deadline = deadline
        self._loads: dict[tuple[uuid.UUID, datetime | None], asyncio.Future[Parts]] = {}

    async def parts(self, campaign: uuid.UUID, updated_at: datetime | None) -> Parts:
        """The attachments of the campaign as it was at ``updated_at`` (an edit loads them afresh)."""
        key = (campaign, updated_at)
        loading = self._loads.get(key)
        if loading is None:
            # Attachments run to tens of MB per campaign: keep those of the few campaigns being sent.
            for old in [k for k, task in self._loads.items() if task.done()][: max(0, len(self._loads) - 3)]:
                del self._loads[old]
            loading = asyncio.ensure_future(
                load_parts(
                    self._sessionmaker,
                    campaign,
                    self._storage,
                    allow_private_links=self._allow_private_links,
                    deadline=self._deadline,
                )
            )
            self._loads[key] = loading
        try:
            # Shielded: one slice being cancelled does not cancel the load the others wait for.
            return await asyncio.shield(loading)
        except Exception:
            if loading.done() and self._loads.get(key) is loading:
                del self._loads[key]
            raise
