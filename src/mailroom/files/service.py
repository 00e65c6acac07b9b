"""Uploaded files: their names, their rows and how they are shown to the API."""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.files.models import File
from mailroom.files.storage import Storage
from mailroom.serialize import epoch

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


def stored_path(user: uuid.UUID, ext: str) -> str:
    return f"{user}/{uuid.uuid4()}.{ext}"


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


def view(file: File, storage: Storage) -> dict[str, Any]:
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
