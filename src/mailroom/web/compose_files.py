"""Attachments on the compose form: files chosen in the form are stored as ``POST /emails/attachments``
stores them, and the campaign attaches them by id, as the API's body does.

The form's body is read as it arrives (bodies to the compose paths are streamed, up to COMPOSE_BODY_LIMIT),
and each file is written to storage in chunks: a file is never held whole in memory. A stored file is kept
on the form by its id, so a form sent back with errors does not ask for it again.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import FormData, UploadFile

from mailroom.files import service
from mailroom.files.models import File
from mailroom.files.storage import Storage, TooLarge
from mailroom.transports.base import ESP_SIZE_LIMIT, MAILBOX_SIZE_LIMIT
from mailroom.web.compose_form import FormErrors

UPLOAD_FIELD = "upload"
# Files one press of the form may carry, and what its other fields may weigh (the html body is the largest).
MAX_UPLOADS = 10
MAX_FIELD_BYTES = 1024 * 1024
# Everything a campaign may attach (sent from a mailbox, the larger limit) and the form's fields besides.
COMPOSE_BODY_LIMIT = MAILBOX_SIZE_LIMIT + 2 * MAX_FIELD_BYTES
# The compose paths whose bodies are read as they arrive rather than buffered first.
COMPOSE_PATHS = re.compile(r"/app/brands/[^/]+/campaigns/(?:new|[^/]+/edit)\Z")
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Attached:
    id: uuid.UUID
    name: str
    size: int


def size_limit(mailbox: str) -> int:
    """What a campaign may attach in all: a mailbox (Gmail, Outlook) takes more than the service's own sending."""
    return MAILBOX_SIZE_LIMIT if mailbox else ESP_SIZE_LIMIT


def chosen_files(posted: FormData) -> list[UploadFile]:
    """The files chosen in the form (a file input left empty sends a part with no name and no bytes)."""
    return [v for v in posted.getlist(UPLOAD_FIELD) if isinstance(v, UploadFile) and v.filename]


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


async def store_uploads(
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    user: uuid.UUID,
    brand: uuid.UUID,
    uploads: list[UploadFile],
    limit: int,
) -> list[str]:
    """Store each chosen file as the brand's, uploaded by the user; their ids. FormErrors (on "attachments")
    for an empty file or one over ``limit``; the files stored before it are removed again."""
    if len(uploads) > MAX_UPLOADS:
        raise FormErrors({"attachments": f"attach at most {MAX_UPLOADS} files at a time"})
    stored: list[service.Stored] = []
    try:
        for upload in uploads:
            try:
                stored.append(await service.store(storage, user, upload.filename, _chunks(upload), limit=limit))
            except service.EmptyFile:
                raise FormErrors({"attachments": f"{service.clean_name(upload.filename)} is empty"}) from None
            except TooLarge:
                name = service.clean_name(upload.filename)
                raise FormErrors({"attachments": f"{name} is larger than the {limit:,} byte limit"}) from None
        # Recorded in a transaction of their own, committed at once: the campaign is written on a connection
        # of its own, which must see them, and a form sent back with errors keeps them by id.
        async with sessions() as session, session.begin():
            files = [
                await service.record(
                    session, user=user, brand=brand, path=s.path, name=s.name, mime=s.mime, size=s.size
                )
                for s in stored
            ]
    except BaseException:
        for s in stored:
            await service.forget(storage, s.path)
        raise
    return [str(f.id) for f in files]


async def attached_files(session: AsyncSession, brand: uuid.UUID, user: uuid.UUID, ids: list[str]) -> list[Attached]:
    """The files the form holds that the user may attach in this brand (the campaigns service's rule); ids
    of any other file are left out, so a tampered id never shows another brand's file name."""
    wanted = []
    for value in ids:
        try:
            wanted.append(uuid.UUID(value))
        except ValueError:
            continue
    if not wanted:
        return []
    rows = await session.scalars(select(File).where(File.id.in_(wanted), service.attachable(brand, user)))
    found = {f.id: f for f in rows}
    return [Attached(f.id, f.name, f.size) for f in (found.get(i) for i in wanted) if f is not None]
