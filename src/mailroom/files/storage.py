"""Where uploaded files' bytes live, addressed by the file row's path.

Two backends behind one interface: a folder under the data dir (the default) and any S3-compatible
object store (when MAILROOM_S3_BUCKET is set). Files are written from a stream and read back in
chunks, so neither an upload nor a send ever needs a whole file in memory here.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from mailroom.config import Settings
from mailroom.crypto import SecretBox

CHUNK = 64 * 1024
# S3 multipart parts must be at least 5 MiB (all but the last); larger parts mean fewer requests.
S3_PART = 8 * 1024 * 1024
# Purpose of the HMAC key that signs local file links: no other signature can be passed off as one.
LINK_PURPOSE = "file-links"
LINK_TTL = 24 * 3600
# boto3 is an optional extra (mailroom[s3]): an install keeping files in its data folder does without it.
S3_NOT_INSTALLED = (
    "MAILROOM_S3_BUCKET is set, but S3 support is not installed: pip install 'mailroom[s3]' "
    "(in a clone: .venv/bin/pip install -e '.[s3]')"
)


class StorageNotInstalled(RuntimeError):
    """The configured storage needs a package this installation lacks; the message says which to install."""


class TooLarge(Exception):
    """The stream went past the size cap; nothing was stored."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


class FileMissing(Exception):
    """No stored file at that path."""


class Storage(Protocol):
    async def write_stream(self, path: str, chunks: AsyncIterator[bytes], *, limit: int) -> int:
        """Store the chunks at ``path``; the number of bytes stored. Past ``limit`` bytes (TooLarge) or
        when the stream fails, nothing is stored: the file appears whole or not at all."""
        ...

    def open(self, path: str) -> AsyncIterator[bytes]:
        """The stored bytes in chunks; FileMissing when there is no such file."""
        ...

    async def delete(self, path: str) -> None:
        """Remove the file; no error when it is already gone."""
        ...

    def signed_url(self, path: str, *, mime: str | None, name: str, ttl: int = LINK_TTL) -> str:
        """A link anyone may GET the file through until it expires."""
        ...


async def read_all(storage: Storage, path: str) -> bytes:
    """A whole stored file, read through the storage in chunks."""
    data = bytearray()
    async for chunk in storage.open(path):
        data += chunk
    return bytes(data)


def is_image(mime: str | None) -> bool:
    return bool(mime) and str(mime).startswith("image/")


def disposition(name: str, mime: str | None) -> str:
    """Content-Disposition of a served file: images inline, everything else downloaded, never rendered."""
    kind = "inline" if is_image(mime) else "attachment"
    # Names are cleaned on upload; rows from before that still must not break the header.
    name = "".join(ch for ch in name if ch.isprintable()) or "attachment"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


def link_signature(box: SecretBox, path: str, expires: int) -> str:
    return box.sign(f"{path}\n{expires}", purpose=LINK_PURPOSE)


def link_is_valid(box: SecretBox, path: str, expires: str, signature: str, *, now: float | None = None) -> bool:
    """Whether ``signature`` was made for ``path`` until ``expires`` and that moment is still ahead."""
    if not expires.isdigit() or len(expires) > 12:
        return False
    if not box.verify(f"{path}\n{int(expires)}", signature, purpose=LINK_PURPOSE):
        return False
    return int(expires) > (time.time() if now is None else now)


class LocalStorage:
    def __init__(self, root: Path, *, box: SecretBox | None = None, public_url: str = "") -> None:
        self.root = root.resolve()
        self.box = box
        self.public_url = public_url.rstrip("/")

    def _full(self, path: str) -> Path:
        full = (self.root / path).resolve()
        # A stored path is ours, but never let one reach outside the storage folder.
        if not full.is_relative_to(self.root) or full == self.root:
            raise FileMissing(path)
        return full

    def read(self, path: str) -> bytes:
        return self._full(path).read_bytes()

    def write(self, path: str, data: bytes) -> None:
        full = self._full(path)
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.with_name(full.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, full)

    async def write_stream(self, path: str, chunks: AsyncIterator[bytes], *, limit: int) -> int:
        full = self._full(path)
        await asyncio.to_thread(full.parent.mkdir, parents=True, exist_ok=True)
        # A private name of its own: a failed upload leaves nothing under the final name.
        tmp = full.with_name(f".{full.name}.{secrets.token_hex(8)}.part")
        size = 0
        file = await asyncio.to_thread(open, tmp, "xb")
        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(limit)
                    await asyncio.to_thread(file.write, chunk)
            finally:
                await asyncio.to_thread(file.close)
            await asyncio.to_thread(os.replace, tmp, full)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size

    async def open(self, path: str) -> AsyncIterator[bytes]:
        full = self._full(path)
        try:
            file = await asyncio.to_thread(open, full, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FileMissing(path) from None
        try:
            while chunk := await asyncio.to_thread(file.read, CHUNK):
                yield chunk
        finally:
            file.close()

    async def delete(self, path: str) -> None:
        await asyncio.to_thread(self._full(path).unlink, missing_ok=True)

    def signed_url(self, path: str, *, mime: str | None, name: str, ttl: int = LINK_TTL) -> str:
        if self.box is None:
            raise RuntimeError("this storage was built without a key to sign links")
        expires = int(time.time()) + ttl
        query = urllib.parse.urlencode({"Expires": expires, "Signature": link_signature(self.box, path, expires)})
        return f"{self.public_url}/files/{urllib.parse.quote(path)}?{query}"


class S3Storage:
    """An S3-compatible bucket through boto3; its blocking calls run in threads."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise StorageNotInstalled(S3_NOT_INSTALLED) from None

        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}),
        )
        assert settings.s3_bucket is not None
        return cls(client, settings.s3_bucket)

    async def write_stream(self, path: str, chunks: AsyncIterator[bytes], *, limit: int) -> int:
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit)
                buffer += chunk
                if len(buffer) >= S3_PART:
                    # Past one part: a multipart upload, so at most one part is held at a time.
                    if upload_id is None:
                        created = await asyncio.to_thread(
                            self.client.create_multipart_upload, Bucket=self.bucket, Key=path
                        )
                        upload_id = str(created["UploadId"])
                    parts.append(await self._part(path, upload_id, len(parts) + 1, bytes(buffer)))
                    buffer.clear()
            if upload_id is None:
                await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=path, Body=bytes(buffer))
                return size
            if buffer:
                parts.append(await self._part(path, upload_id, len(parts) + 1, bytes(buffer)))
            await asyncio.to_thread(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=path,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            if upload_id is not None:
                abort = self.client.abort_multipart_upload
                await asyncio.shield(asyncio.to_thread(abort, Bucket=self.bucket, Key=path, UploadId=upload_id))
            raise
        return size

    async def _part(self, path: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        answer = await asyncio.to_thread(
            self.client.upload_part, Bucket=self.bucket, Key=path, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    async def open(self, path: str) -> AsyncIterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            answer = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=path)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise FileMissing(path) from None
            raise
        body = answer["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, path: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=path)

    def signed_url(self, path: str, *, mime: str | None, name: str, ttl: int = LINK_TTL) -> str:
        # The store answers with our type and disposition, so a browser never renders an upload as a page.
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": path,
                "ResponseContentType": mime or "application/octet-stream",
                "ResponseContentDisposition": disposition(name, mime),
            },
            ExpiresIn=ttl,
        )
        return url


def check_installed(settings: Settings) -> None:
    """StorageNotInstalled when the configured storage cannot be used by this installation: said when a
    process starts, rather than as a traceback from the first upload or send."""
    if settings.s3_bucket:
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise StorageNotInstalled(S3_NOT_INSTALLED) from None


def storage_from_settings(settings: Settings, box: SecretBox | None = None) -> Storage:
    """The object store when a bucket is configured, else the folder data_dir/files."""
    if settings.s3_bucket:
        return S3Storage.from_settings(settings)
    return LocalStorage(settings.data_dir / "files", box=box, public_url=settings.public_url)
