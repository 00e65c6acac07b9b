"""The API's documentation page, /docs: Swagger UI served from the package itself.

The page and everything it loads come from mailroom, so it works on a machine without internet access,
and its Content-Security-Policy lets nothing else in: no other origin, no inline script but the one that
starts Swagger UI (allowed by its hash).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from mailroom.api.strict_query import StrictQueryRoute
from mailroom.errors import NotFound

SWAGGER_UI_VERSION = "5.35.0"
ASSETS = Path(__file__).parent / "static" / "docs"
# The version is in the path, so a browser may keep each file for good and still sees an upgrade at once.
ASSETS_PATH = f"/docs/assets/{SWAGGER_UI_VERSION}"
# Served by name from this list only: a client's path never reaches the file system.
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

# Swagger UI sets inline styles and shows image responses and SVG icons from blob: and data: URLs; it
# fetches the document and "Try it out" requests from this origin only.
_POLICY = (
    "default-src 'none'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False, route_class=StrictQueryRoute)


@router.get("/docs")
async def docs_page(request: Request) -> HTMLResponse:
    openapi_url = request.app.openapi_url
    if openapi_url is None:
        raise NotFound("no API document is published", field="path")
    root = str(request.scope.get("root_path", "")).rstrip("/")
    assets = root + ASSETS_PATH
    page = get_swagger_ui_html(
        openapi_url=root + openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon-32x32.png",
        # Its default would have the page ask swagger.io to validate the document.
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers["Content-Security-Policy"] = content_security_policy(bytes(page.body).decode())
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


def content_security_policy(html: str) -> str:
    """The page's policy, allowing exactly the inline scripts it holds."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return _POLICY.format(scripts=hashes)


@router.api_route(ASSETS_PATH + "/{name}", methods=["GET", "HEAD"])
async def docs_asset(name: str) -> FileResponse:
    media_type = ASSET_TYPES.get(name)
    if media_type is None:
        raise NotFound("no such file", field="name")
    return FileResponse(
        ASSETS / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"},
    )
