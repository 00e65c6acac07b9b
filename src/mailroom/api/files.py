"""Uploads (campaign attachments) and the signed links files are fetched through.

An upload is parsed as it arrives and its file part written to storage chunk by chunk: the body is
never held whole. The stored file appears only once the whole body has arrived well formed with
exactly one file in it; anything else (too large, cut short, two files) leaves nothing behind.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from mailroom.api.auth import BRAND_HEADER, current_caller
from mailroom.api.envelope import Ok, ORJSONResponse, ok
from mailroom.api.errors import ERROR_SCHEMA
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crm.membership import require_member
from mailroom.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from mailroom.files import service
from mailroom.files.storage import FileMissing, Storage, TooLarge, disposition, link_is_valid
from mailroom.transports.base import ESP_SIZE_LIMIT
from mailroom.transports.gmail import GmailTransport
from mailroom.transports.mailgun import MailgunTransport
from mailroom.transports.outlook import OutlookTransport

router = APIRouter(tags=["files"], route_class=StrictQueryRoute)

# What one uploaded file may weigh, by where it will be sent from (that route's limit); any other origin
# is taken for the ESP.
UPLOAD_LIMITS = {
    "gmail": GmailTransport.capabilities.size_limit,
    "outlook": OutlookTransport.capabilities.size_limit,
    "mailgun": MailgunTransport.capabilities.size_limit,
}
DEFAULT_UPLOAD_LIMIT = ESP_SIZE_LIMIT
# The multipart framing and any small form fields besides the file.
UPLOAD_OVERHEAD = 64 * 1024
UPLOAD_BODY_LIMIT = max(UPLOAD_LIMITS.values()) + UPLOAD_OVERHEAD
FILE_FIELD = "file"

_ERROR = {"application/json": {"schema": ERROR_SCHEMA}}


def storage_of(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


class _Truncated(Exception):
    """The body ended before the multipart closing boundary."""


class _Parts:
    """python-multipart's callbacks turned into a stream of events the upload reads in order:
    ("begin", b""), ("header", b"Name: value"), ("headers", b""), ("data", bytes), ("part_end", b"")."""

    def __init__(self, request: Request, boundary: bytes) -> None:
        self.request = request
        self.events: list[tuple[str, bytes]] = []
        self.ended = False
        # A header may arrive in pieces across chunks: its name and value are gathered until it ends.
        field, value = bytearray(), bytearray()

        def on_header_end() -> None:
            self.events.append(("header", bytes(field) + b":" + bytes(value)))
            field.clear()
            value.clear()

        def on_end() -> None:
            self.ended = True

        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": lambda: self.events.append(("begin", b"")),
                "on_part_data": lambda data, start, end: self.events.append(("data", bytes(data[start:end]))),
                "on_part_end": lambda: self.events.append(("part_end", b"")),
                "on_header_field": lambda data, start, end: field.extend(data[start:end]),
                "on_header_value": lambda data, start, end: value.extend(data[start:end]),
                "on_header_end": on_header_end,
                "on_headers_finished": lambda: self.events.append(("headers", b"")),
                "on_end": on_end,
            },
            max_header_count=16,
        )

    async def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        async for chunk in self.request.stream():
            if chunk:
                try:
                    self.parser.write(chunk)
                except MultipartParseError:
                    raise BadRequest("is not a well-formed multipart/form-data body", field="body") from None
            events, self.events = self.events, []
            for event in events:
                yield event
        if not self.ended:
            raise _Truncated


def _file_name(headers: list[bytes]) -> tuple[bool, str | None]:
    """Whether a part is a file (its Content-Disposition has a filename, or it is the "file" field) and its name."""
    for raw in headers:
        name, _, value = raw.partition(b":")
        if name.strip().lower() != b"content-disposition":
            continue
        _, options = parse_options_header(value.strip())
        filename = options.get(b"filename")
        field = options.get(b"name")
        if filename is not None:
            return True, filename.decode("utf-8", "replace")
        return field == FILE_FIELD.encode(), None
    return False, None


class _Upload:
    """Reads the body's parts: the file part's data is handed to storage as it comes, everything
    else is skipped; afterwards, whether the body held a second file and ended properly."""

    def __init__(self, parts: _Parts) -> None:
        self.events = aiter(parts)
        self.files = 0
        self.name: str | None = None
        self.in_file = False

    async def next_file(self) -> bool:
        """Advance to the next file part, past its headers; False at the end of the body."""
        headers: list[bytes] = []
        async for kind, data in self.events:
            if kind == "begin":
                headers = []
            elif kind == "header":
                headers.append(data)
            elif kind == "headers":
                is_file, name = _file_name(headers)
                if is_file:
                    self.files += 1
                    self.name = name if self.files == 1 else self.name
                    self.in_file = True
                    return True
        return False

    async def data(self) -> AsyncIterator[bytes]:
        """The current file part's bytes."""
        async for kind, data in self.events:
            if kind == "data":
                yield data
            elif kind == "part_end":
                self.in_file = False
                return
        raise _Truncated  # pragma: no cover - _Parts raises first


@router.post(
    "/emails/attachments",
    response_model=Ok[service.FileOut],
    summary="Upload a file to attach to campaigns",
    responses={
        400: {"description": "No file, two files, an empty file or a malformed body", "content": _ERROR},
        403: {"description": "The caller is not a member of the brand", "content": _ERROR},
        413: {"description": "The file is larger than the origin's limit", "content": _ERROR},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [FILE_FIELD],
                        # An empty file is refused: there is nothing to attach.
                        "properties": {FILE_FIELD: {"type": "string", "format": "binary", "minLength": 1}},
                    }
                }
            },
        }
    },
)
async def upload_attachment(
    request: Request,
    origin: Annotated[
        str | None,
        Query(max_length=32, description="gmail or outlook: up to 26 MiB; mailgun or anything else: 15 MiB"),
    ] = None,
) -> ORJSONResponse:
    brand = _optional_brand(request)
    # A short transaction of its own: no database connection is held while the body arrives.
    caller = await current_caller(request)
    if brand is not None:
        async with request.app.state.sessionmaker() as session, session.begin():
            await require_member(session, caller.user.id, brand, field=BRAND_HEADER)
    user = caller.user.id
    limit = UPLOAD_LIMITS.get((origin or "").lower(), DEFAULT_UPLOAD_LIMIT)
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadRequest("must be sent as multipart/form-data", field=FILE_FIELD)
    storage = storage_of(request)
    upload = _Upload(_Parts(request, boundary))
    path: str | None = None
    try:
        if not await upload.next_file():
            raise BadRequest("is required: one file part", field=FILE_FIELD)
        stored = await service.store(storage, user, upload.name, upload.data(), limit=limit)
        path = stored.path
        while await upload.next_file():
            async for _ in upload.data():
                pass  # a second file is not kept; the body is read to its end all the same
        if upload.files > 1:
            raise BadRequest("must be exactly one file part", field=FILE_FIELD)
        async with request.app.state.sessionmaker() as session, session.begin():
            file = await service.record(
                session, user=user, brand=brand, path=path, name=stored.name, mime=stored.mime, size=stored.size
            )
            answer = service.view(file, storage)
    except TooLarge as exc:
        raise PayloadTooLarge(f"must be at most {exc.limit} bytes", field=FILE_FIELD) from None
    except service.EmptyFile:
        raise BadRequest("is empty", field=FILE_FIELD) from None
    except (_Truncated, ClientDisconnect):
        await service.forget(storage, path)
        raise BadRequest("ended before the upload was complete", field="body") from None
    except BaseException:
        await service.forget(storage, path)
        raise
    return ok(answer)


def _optional_brand(request: Request) -> uuid.UUID | None:
    header = request.headers.get(BRAND_HEADER)
    # Present but empty is not absent: the uploader meant to name a brand and named none.
    if header is None:
        return None
    try:
        return uuid.UUID(header)
    except ValueError:
        raise BadRequest("must be a brand id", field=BRAND_HEADER) from None


@router.get(
    "/files/{path:path}",
    summary="Download a stored file through a signed link",
    responses={
        200: {"description": "The file", "content": {"application/octet-stream": {}}},
        403: {"description": "The signature does not match or the link expired", "content": _ERROR},
        404: {"description": "No such file", "content": _ERROR},
    },
    response_class=Response,
)
async def download(
    request: Request,
    path: str,
    expires: Annotated[str, Query(alias="Expires", max_length=20)] = "",
    signature: Annotated[str, Query(alias="Signature", max_length=100)] = "",
) -> Response:
    if not link_is_valid(request.app.state.secret_box, path, expires, signature):
        raise Forbidden("the link is invalid or has expired", field="Signature")
    async with request.app.state.sessionmaker() as session:
        file = await service.live_by_path(session, path)
    if file is None:
        raise NotFound("no such file", field="path")
    stream = storage_of(request).open(path)
    try:
        first = await anext(stream)
    except (FileMissing, StopAsyncIteration):
        raise NotFound("no such file", field="path") from None

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in stream:
            yield chunk

    headers: dict[str, Any] = {
        "Content-Disposition": disposition(file.name, file.mime),
        "X-Content-Type-Options": "nosniff",
        # A browser that renders the file anyway (an SVG image opened on its own, a sniffing one) runs
        # it in a unique origin with scripts, forms and plugins off.
        "Content-Security-Policy": "sandbox",
        "Content-Length": str(file.size),
        "Cache-Control": "private, max-age=0",
    }
    return StreamingResponse(body(), media_type=file.mime or "application/octet-stream", headers=headers)
