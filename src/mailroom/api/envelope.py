"""The response envelope of every endpoint: {"code": "OK", "data": ..., "info": {...}}."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from mailroom.serialize import closed

T = TypeVar("T")


class _Envelope(BaseModel):
    """What Ok and OkList share: closed, and titled after the shape they carry."""

    model_config = ConfigDict(extra="forbid")
    _title_suffix: ClassVar[str]
    code: Literal["OK"]

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        return f"{_name(params[0])}{cls._title_suffix}"


class Ok(_Envelope, Generic[T]):
    """The envelope of a successful answer, as a route's `response_model`.

    It only describes: the routes answer an ORJSONResponse built from the TypedDict shape, which FastAPI
    passes through without validating it again.
    """

    _title_suffix: ClassVar[str] = "Answer"
    data: T


@closed
class Info(TypedDict):
    count: Annotated[int, Field(description="How many items this answer holds")]
    total: Annotated[int, Field(description="How many items match in all, beyond this page too")]


class OkList(_Envelope, Generic[T]):
    """The envelope of a list: its items, and how many there are in all."""

    _title_suffix: ClassVar[str] = "ListAnswer"
    data: list[T]
    info: Info


def _name(shape: Any) -> str:
    # A bare list of shapes (no `info`, unlike OkList) is titled after its items: list[ContactOut]'s own
    # name is "list", which says nothing in the document.
    if get_origin(shape) is list:
        return f"{_name(get_args(shape)[0])}Array"
    name: str = getattr(shape, "__name__", None) or str(shape)
    return name.removesuffix("Out")


class ORJSONResponse(JSONResponse):
    """JSON via orjson: UUIDs and floats serialised natively, several times faster than json.

    A JSONResponse to FastAPI, so that the OpenAPI document shows a route's `response_model` as its body.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def ok(data: Any, *, status_code: int = 200) -> ORJSONResponse:
    return ORJSONResponse({"code": "OK", "data": data}, status_code=status_code)


def ok_list(rows: Sequence[Any], *, total: int) -> ORJSONResponse:
    """A list answer; `total` is the number of all matches, not only of the page returned."""
    return ORJSONResponse({"code": "OK", "data": list(rows), "info": {"count": len(rows), "total": total}})


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}
