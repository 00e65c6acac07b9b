"""A method a path does not take is answered 405, naming in Allow every method the path does take."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/health", "GET"),
        # Two routes share each of these paths, one per method: Allow used to name only the first.
        ("OPTIONS", "/unsubscribe/some-token", "GET, POST"),
        ("PATCH", "/users/self/tokens", "GET, POST"),
        ("PATCH", "/emails/4a5c2f0e-7d1b-4c3e-9f6a-2b8d0e1f3a4c", "DELETE, GET, PUT"),
        # Paths beside /emails/{id}: a campaign id is a UUID, so none of them is taken for one.
        ("GET", "/emails/events", "POST"),
        ("DELETE", "/emails/individual", "POST"),
        ("PUT", "/emails/attachments", "POST"),
        ("POST", "/emails/domain", "GET"),
    ],
)
async def test_a_method_the_path_does_not_take_is_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert response.json()["code"] == "MethodNotAllowed"


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/emails/not-a-campaign", "id"),
        ("PUT", "/emails/12345", "id"),
        ("DELETE", "/emails/not-a-campaign", "id"),
        ("PUT", "/emails/not-a-campaign/notifications", "id"),
        ("GET", "/emails/not-a-campaign/emails", "campaign"),
    ],
)
async def test_an_id_that_is_not_a_uuid_is_named(client: httpx.AsyncClient, method: str, path: str, name: str) -> None:
    response = await client.request(method, path)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(f"{name}: must be a UUID")


async def test_a_path_no_route_takes_is_404(client: httpx.AsyncClient) -> None:
    # /emails/{id} takes no PATCH, whatever the id: nothing is named.
    for method, path in (("PATCH", "/emails/not-a-campaign"), ("GET", "/emails/not-a-campaign/nothing")):
        response = await client.request(method, path)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "ResourceNotFound"
