from __future__ import annotations

import httpx


async def test_health_answers_once_the_database_is_reachable(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_openapi_page_lists_the_campaign_and_crm_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/brands/{brand}/users" in paths


async def test_openapi_documents_bad_input_as_400_with_the_error_body(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    create = schema["paths"]["/emails"]["post"]["responses"]
    assert "422" not in create
    assert create["400"]["content"]["application/json"]["schema"]["required"] == ["code", "message"]
