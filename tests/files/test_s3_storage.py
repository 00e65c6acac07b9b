"""Uploaded files in an S3-compatible store: moto's S3 server on loopback, spoken to over HTTP by boto3."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from mailroom.app import create_app, dispose
from mailroom.config import Settings
from mailroom.files.storage import S3_PART
from mailroom.transports.base import ESP_SIZE_LIMIT
from tests.support.campaigns import schedule
from tests.support.sender import running_worker, wait_until_sent
from tests.support.smtp_server import smtp_server
from tests.support.uploads import PDF, PNG, S3Server, post_upload, s3_server, stored_files, upload
from tests.support.world import Actor, World


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
async def s3_app(s3: S3Server, settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(s3.settings(settings))
    yield application
    await dispose(application)


@pytest.fixture
async def actor(world: World, s3_app: FastAPI) -> AsyncIterator[Actor]:
    """A brand admin whose requests go to the service configured with the bucket."""
    admin = await world.brand_admin()
    transport = httpx.ASGITransport(app=s3_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mailroom.test") as client:
        yield dataclasses.replace(admin, client=client)


async def test_an_upload_lands_in_the_bucket_behind_a_presigned_link(
    actor: Actor, s3: S3Server, settings: Settings
) -> None:
    file = await upload(actor, PNG, "logo.png", content_type="text/plain")
    assert file["path"] in s3.stored_keys() and file["mime"] == "image/png"
    assert stored_files(settings, actor.user) == []  # nothing in the local folder
    assert file["url"].startswith(f"{s3.endpoint}/{s3.bucket}/{file['path']}?")
    assert "X-Amz-Signature=" in file["url"]
    async with httpx.AsyncClient() as browser:
        response = await browser.get(file["url"])
        assert response.status_code == 200 and response.content == PNG
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-disposition"].startswith("inline;")
        pdf = await upload(actor, PDF, "flyer.pdf")
        response = await browser.get(pdf["url"])
        assert response.content == PDF and response.headers["content-disposition"].startswith("attachment;")
    # The store checks its own signatures (moto does not enforce them); the link expires in a day.
    assert "X-Amz-Expires=86400" in file["url"]


async def test_a_large_upload_goes_in_parts_and_one_over_the_limit_leaves_nothing(actor: Actor, s3: S3Server) -> None:
    data = PDF + bytes(range(256)) * ((2 * S3_PART + 1000) // 256)
    file = await upload(actor, data, "brochure.pdf", origin="gmail")
    stored = s3.client().get_object(Bucket=s3.bucket, Key=file["path"])["Body"].read()
    assert stored == data

    before = s3.stored_keys()
    over = PDF + b"\0" * (ESP_SIZE_LIMIT - len(PDF) + 1)
    response = await post_upload(actor, over, "huge.pdf", origin="mailgun")
    assert response.status_code == 413
    assert s3.stored_keys() == before
    assert s3.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


async def test_the_sender_reads_attachments_from_the_bucket(
    actor: Actor, s3: S3Server, s3_app: FastAPI, settings: Settings
) -> None:
    file = await upload(actor, PDF, "Flyer.pdf")
    with smtp_server() as server:
        made = await schedule(
            actor, to=[{"recipient_type": "Email", "email": "jane@example.com"}], attachments=[{"file": file["id"]}]
        )
        async with running_worker(s3.settings(settings), transport="smtp", smtp_url=server.url):
            state = await wait_until_sent(s3_app.state.sessionmaker, made["id"])
    assert state["failed_at"] is None, state["failure"]
    (received,) = server.messages
    (part,) = [p for p in received.message.walk() if p.get_filename() == "Flyer.pdf"]
    assert part.get_content() == PDF
