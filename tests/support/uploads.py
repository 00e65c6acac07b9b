"""Uploading files as a client does (multipart over the API), and looking at what was stored.

    file = await upload(actor, PNG, "logo.png", origin="gmail")
    assert stored_files(settings, actor.user) == [file["path"]]

``s3_server()`` runs moto's S3-compatible server on a free loopback port with one bucket, for the
object-storage path: a real HTTP server speaking S3, not a patched client.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.config import Settings
from tests.support.world import Actor

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"


async def post_upload(
    actor: Actor,
    data: bytes,
    name: str = "logo.png",
    *,
    origin: str | None = None,
    content_type: str = "application/octet-stream",
    brand: uuid.UUID | None = None,
) -> httpx.Response:
    params = {} if origin is None else {"origin": origin}
    headers = {**actor.headers, "X-Rechat-Brand": str(brand or actor.brand)}
    return await actor.client.post(
        "/emails/attachments", params=params, files={"file": (name, data, content_type)}, headers=headers
    )


async def upload(actor: Actor, data: bytes, name: str = "logo.png", **kw: Any) -> dict[str, Any]:
    answer: dict[str, Any] = actor.data(await post_upload(actor, data, name, **kw))
    return answer


def stored_files(settings: Settings, user: uuid.UUID | None = None) -> list[str]:
    """Paths (relative to the storage folder) of every file stored, temporary ones included."""
    root = (settings.data_dir / "files").resolve()
    base = root / str(user) if user else root
    if not base.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in base.rglob("*") if p.is_file())


async def file_rows(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(text("SELECT * FROM files ORDER BY created_at"))
    return [dict(row._mapping) for row in rows]


def local_path(url: str) -> str:
    """The path and query of a link to this service (the test client's base URL is the public URL)."""
    parsed = httpx.URL(url)
    return parsed.raw_path.decode()


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def settings(self, settings: Settings, **overrides: Any) -> Settings:
        return settings.model_copy(
            update={
                "s3_bucket": self.bucket,
                "s3_endpoint_url": self.endpoint,
                "s3_region": "us-east-1",
                "s3_access_key_id": "testing",
                "s3_secret_access_key": "testing",
                **overrides,
            }
        )

    def stored_keys(self) -> list[str]:
        answer = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in answer.get("Contents", []))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def s3_server(bucket: str = "mailroom-files") -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = S3Server(f"http://127.0.0.1:{port}", bucket)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
