"""A method a path does not take is answered 405, naming in Allow every method the path does take."""

from __future__ import annotations

import uuid

import httpx
import pytest


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/health", "GET"),
        # Two routes share each of these paths, one per method: Allow used to name only the first.
        ("OPTIONS", "/unsubscribe/some-token", "GET, POST"),
        ("PATCH", "/users/self/tokens", "GET, POST"),
        ("PATCH", f"/emails/{uuid.uuid4()}", "DELETE, GET, PUT"),
    ],
)
async def test_a_method_the_path_does_not_take_is_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert response.json()["code"] == "MethodNotAllowed"
