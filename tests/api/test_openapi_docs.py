"""/docs works without internet access, and /openapi.json says how to call the API: token, brand, errors."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from mailroom.api.docs import ASSETS, ASSETS_PATH, SWAGGER_UI_VERSION
from mailroom.api.openapi import BRAND_HEADER_ROUTES, CONFLICTS, PAGE_ERRORS, PUBLIC_ERRORS

COMPONENT = "#/components/schemas/"
ERROR_REF = {"$ref": f"{COMPONENT}Error"}
# What a browser fetches because a page or stylesheet names it.
LINKED = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]*)""")
# A URL with a scheme or protocol-relative, where a browser would load it: url(), @import, src.
REMOTE_IN_JS = re.compile(
    r"""url\(\s*\\?["']?(?:https?:)?//|@import\s|\bsrc\s*[=:]\s*\\?["'`](?:https?:)?//""", re.IGNORECASE
)


async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


async def test_the_docs_page_and_its_assets_come_from_mailroom(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text
    links = LINKED.findall(page.text)
    assert {link.rsplit("/", 1)[-1] for link in links} == {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "favicon-32x32.png",
    }
    expected = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for link in links:
        assert link.startswith("/") and not link.startswith("//"), link
        asset = await client.get(link)
        assert asset.status_code == 200, link
        assert expected[link[link.rindex(".") :]] in asset.headers["content-type"], link
        assert asset.content == (ASSETS / link.rsplit("/", 1)[-1]).read_bytes()
        assert (await client.head(link)).status_code == 200, link
    # Swagger UI would otherwise show a badge fetched from swagger.io.
    assert '"validatorUrl": null' in page.text


async def test_the_docs_page_allows_only_its_own_scripts(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    (inline,) = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert policy["script-src"] == f"'self' 'sha256-{digest}'"
    assert "http" not in page.headers["content-security-policy"]


async def test_swagger_ui_loads_no_font_image_or_style_from_elsewhere() -> None:
    css = (ASSETS / "swagger-ui.css").read_text()
    targets = CSS_URL.findall(css)
    assert targets, "the stylesheet's url() values were not found"
    assert all(target.startswith("data:") for target in targets), [t[:40] for t in targets if not t.startswith("data:")]
    assert "@import" not in css and "@font-face" not in css
    js = (ASSETS / "swagger-ui-bundle.js").read_text()
    assert REMOTE_IN_JS.findall(js) == []


async def test_only_the_listed_assets_are_served(client: httpx.AsyncClient) -> None:
    for name in ("docs.py", "..%2Fdocs.py", "LICENSE", "swagger-ui.js"):
        assert (await client.get(f"{ASSETS_PATH}/{name}")).status_code == 404, name
    # The version in the asset path is the one the README names.
    assert f"`swagger-ui-dist` at version **{SWAGGER_UI_VERSION}**" in (ASSETS / "README.md").read_text()
    assert (ASSETS / "LICENSE").is_file() and (ASSETS / "swagger-ui-bundle.js.LICENSE.txt").is_file()


async def test_redoc_is_not_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/redoc")).status_code == 404


async def test_the_document_is_valid_openapi_3_1(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    assert doc["openapi"].startswith("3.1")
    validate(doc, cls=OpenAPIV31SpecValidator)


async def test_every_json_answer_declares_its_shape(client: httpx.AsyncClient) -> None:
    # A route without a response_model is documented as {} (anything) or, answering a Response, as a
    # string: clients and the contract test would then learn nothing of what it answers.
    doc = await document(client)
    validate(doc, cls=OpenAPIV31SpecValidator)
    components = doc["components"]["schemas"]
    undeclared, open_ended = [], []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                media = response.get("content", {}).get("application/json")
                if not status.startswith("2") or media is None:
                    continue
                schema = media.get("schema")
                ref = schema.get("$ref", "") if isinstance(schema, dict) and len(schema) == 1 else ""
                name = ref.removeprefix(COMPONENT)
                if not ref.startswith(COMPONENT) or name not in components:
                    undeclared.append(f"{method.upper()} {path} {status}: {schema}")
                elif components[name].get("additionalProperties") is not False:
                    open_ended.append(f"{method.upper()} {path} {status}: {name}")
    assert undeclared == []
    assert open_ended == []


async def test_operations_that_need_a_token_declare_bearer_auth(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    paths = doc["paths"]
    assert paths["/emails/{id}"]["get"]["security"] == [{"bearerAuth": []}]
    assert paths["/emails/attachments"]["post"]["security"] == [{"bearerAuth": []}]
    for path, method in [("/t/o/{token}", "get"), ("/health", "get"), ("/emails/events", "post")]:
        assert "security" not in paths[path][method], path
    assert "security" not in doc


def _example_path(template: str) -> str:
    # Any id will do: a request without a token is refused before it is looked at.
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), template)


async def test_bearer_auth_is_declared_exactly_where_a_request_without_a_token_is_refused(
    client: httpx.AsyncClient,
) -> None:
    doc = await document(client)
    for template, item in doc["paths"].items():
        for method, operation in item.items():
            response = await client.request(method.upper(), _example_path(template))
            refused = response.status_code == 401 and response.json()["message"].startswith("Authorization:")
            assert refused == ("security" in operation), (method, template, response.status_code)


async def test_the_brand_header_is_declared_where_the_brand_is_read(client: httpx.AsyncClient) -> None:
    paths = (await document(client))["paths"]

    def brand_header(path: str, method: str) -> dict[str, Any]:
        (found,) = [p for p in paths[path][method].get("parameters", []) if p["name"] == "X-Rechat-Brand"]
        assert found["in"] == "header" and found["schema"] == {"type": "string", "format": "uuid"}
        return found

    assert brand_header("/emails", "post")["required"] is False
    assert brand_header("/users/self/google/auth-url", "get")["required"] is True
    for (method, path), (required, _) in BRAND_HEADER_ROUTES.items():
        assert brand_header(path, method.lower())["required"] is required
    assert not [p for p in paths["/emails/{id}"]["get"].get("parameters", []) if p["name"] == "X-Rechat-Brand"]


async def test_failures_are_documented_with_the_error_envelope(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    assert doc["components"]["schemas"]["Error"]["required"] == ["code", "message"]
    get_campaign = doc["paths"]["/emails/{id}"]["get"]["responses"]
    for status in ("401", "403", "404"):
        assert get_campaign[status]["content"]["application/json"]["schema"] == ERROR_REF, status
    assert get_campaign["400"]["content"]["application/json"]["schema"]["required"] == ["code", "message"]
    assert doc["paths"]["/emails"]["post"]["responses"]["413"]["content"]["application/json"]["schema"] == ERROR_REF
    for method, path in CONFLICTS:
        assert doc["paths"][path][method.lower()]["responses"]["409"]["content"]["application/json"]["schema"] == (
            ERROR_REF
        )
    assert "409" not in doc["paths"]["/emails/{id}"]["get"]["responses"]
    for (method, path), statuses in PUBLIC_ERRORS.items():
        operation = doc["paths"][path][method.lower()]
        assert "security" not in operation
        assert {str(status) for status in statuses} <= set(operation["responses"]), path
    for item in doc["paths"].values():
        for operation in item.values():
            assert "422" not in operation["responses"]


async def test_failures_answered_as_a_page_are_documented_as_html(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    for (method, path), statuses in PAGE_ERRORS.items():
        responses = doc["paths"][path][method.lower()]["responses"]
        for status in statuses:
            assert "text/html" in responses[str(status)]["content"], (path, status)
    # A callback's bad query is still answered in the envelope; a provider's error, as a page.
    callback = doc["paths"]["/users/self/google/callback"]["get"]["responses"]["400"]["content"]
    assert set(callback) == {"application/json", "text/html"}
    page = await client.get("/users/confirm/" + "x" * 40)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/emails/{id}/stats", "/files/{path}"])
async def test_errors_a_route_documents_itself_point_at_the_component(client: httpx.AsyncClient, path: str) -> None:
    responses = next(iter((await document(client))["paths"][path].values()))["responses"]
    assert responses["404"]["content"]["application/json"]["schema"] == ERROR_REF
