"""Uploaded files: their names, their rows and how they are shown to the API."""

from __future__ import annotations

import contextlib
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import TypedDict

from mailroom.files.models import File
from mailroom.files.sniff import SNIFF_BYTES, extension, sniff
from mailroom.files.storage import FileMissing, Storage
from mailroom.serialize import Epoch, EpochSet, closed, epoch

MAX_NAME = 200
DEFAULT_NAME = "attachment"


def clean_name(raw: str | None) -> str:
    """A file name safe to show and to put in a MIME header: the last path segment of what the client
    sent, without control characters, at most MAX_NAME characters (the extension kept)."""
    text = unicodedata.normalize("NFC", raw or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    # Cc: control characters; Cf: invisible formatting such as right-to-left overrides that disguise an extension.
    text = "".join(" " if ch.isspace() else ch for ch in text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf"))
    text = " ".join(text.split()).strip(" .")
    if len(text) > MAX_NAME:
        stem, dot, ext = text.rpartition(".")
        text = stem[: MAX_NAME - len(ext) - 1] + dot + ext if dot and 0 < len(ext) <= 16 else text[:MAX_NAME]
    return text or DEFAULT_NAME


def attachable(brand: uuid.UUID, user: uuid.UUID) -> ColumnElement[bool]:
    """The live files a user may attach in a brand: the brand's (its members'), or the user's own uploaded
    before brands were named (none)."""
    return File.deleted_at.is_(None) & ((File.brand == brand) | (File.brand.is_(None) & (File.created_by == user)))


def stored_path(user: uuid.UUID, ext: str) -> str:
    return f"{user}/{uuid.uuid4()}.{ext}"


class EmptyFile(Exception):
    """The upload held no byte: there is nothing to attach."""


@dataclass(frozen=True, slots=True)
class Stored:
    path: str
    name: str
    mime: str
    size: int


async def store(
    storage: Storage, user: uuid.UUID, raw_name: str | None, chunks: AsyncIterator[bytes], *, limit: int
) -> Stored:
    """An uploaded file's bytes written to storage under a fresh path of the user's, its type told from its
    first bytes (not from what the client said) and its name cleaned. Raises EmptyFile, or the storage's
    TooLarge past ``limit`` bytes; either way nothing is left stored."""
    name = clean_name(raw_name)
    head = bytearray()
    async for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    if not head:
        raise EmptyFile

    async def whole() -> AsyncIterator[bytes]:
        yield bytes(head)
        if len(head) >= SNIFF_BYTES:
            async for chunk in chunks:
                yield chunk

    mime = sniff(bytes(head), name)
    path = stored_path(user, extension(mime))
    size = await storage.write_stream(path, whole(), limit=limit)
    return Stored(path, name, mime, size)


async def forget(storage: Storage, path: str | None) -> None:
    """Remove a file stored for an upload that then failed."""
    if path is not None:
        with contextlib.suppress(OSError, FileMissing):  # not stored yet, or already gone
            await storage.delete(path)


async def record(
    session: AsyncSession, *, user: uuid.UUID, brand: uuid.UUID | None, path: str, name: str, mime: str, size: int
) -> File:
    file = File(created_by=user, brand=brand, path=path, name=name, mime=mime, size=size, public=False)
    session.add(file)
    await session.flush()
    await session.refresh(file)
    return file


async def live_by_path(session: AsyncSession, path: str) -> File | None:
    """The file stored at ``path`` unless it was deleted. Paths start with the uploader's id, which
    is indexed: the lookup reads that user's files only."""
    owner, _, _ = path.partition("/")
    try:
        user = uuid.UUID(owner)
    except ValueError:
        return None
    found: File | None = await session.scalar(
        select(File).where(File.created_by == user, File.path == path, File.deleted_at.is_(None))
    )
    return found


Link = Annotated[str, Field(description="A signed link to the file; it expires after a day")]


@closed
class FileOut(TypedDict):
    """An uploaded file: a campaign attaches it by its id."""

    id: uuid.UUID
    created_at: EpochSet
    updated_at: EpochSet
    deleted_at: Epoch
    created_by: Annotated[uuid.UUID, Field(description="The user who uploaded it")]
    path: Annotated[str, Field(description="Where it is stored")]
    name: Annotated[str, Field(description="The file name, cleaned of paths and control characters")]
    public: Annotated[bool, Field(description="Always false: files are fetched through signed links")]
    type: Literal["file"]
    url: Link
    preview_url: Link
    mime: Annotated[str | None, Field(description="The type its content was found to have")]


def view(file: File, storage: Storage) -> FileOut:
    """The document's file object; its links are signed and expire."""
    url = storage.signed_url(file.path, mime=file.mime, name=file.name)
    return {
        "id": file.id,
        "created_at": epoch(file.created_at),
        "updated_at": epoch(file.updated_at or file.created_at),
        "deleted_at": epoch(file.deleted_at),
        "created_by": file.created_by,
        "path": file.path,
        "name": file.name,
        "public": file.public,
        "type": "file",
        "url": url,
        "preview_url": url,
        "mime": file.mime,
    }
