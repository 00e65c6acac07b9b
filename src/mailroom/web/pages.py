"""The workspace's pages under /app/: sign-in, sign-out and a brand's campaigns.

Pages are rendered on the server and work without JavaScript. A page that needs a signed-in user sends a
browser without a live session to the sign-in page; a brand the user does not reach answers 404, as
another brand's objects do in the API, so a page never tells whether a brand exists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.api.deps import Session
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.campaigns import reads
from mailroom.config import Settings
from mailroom.crm.membership import user_brands
from mailroom.crm.models import User
from mailroom.crm.notices import read_sign_in
from mailroom.crypto import InvalidToken, SecretBox
from mailroom.db import driver_connection
from mailroom.errors import Forbidden
from mailroom.transports.registry import outbox_folder, transport_name
from mailroom.web import sign_in
from mailroom.web.guard import (
    CSRF_FIELD,
    FORM_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    csrf_anchor,
    csrf_valid,
    guarded,
    new_form_anchor,
    set_cookie,
)
from mailroom.web.render import campaign_rows, render

PAGE_SIZE = 50
# Served by name from this list only: a client's path never reaches the file system.
STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {"app.css": "text/css; charset=utf-8"}
SIGN_IN_PAGE = "/app/sign-in"

router = APIRouter(prefix="/app", include_in_schema=False, route_class=StrictQueryRoute)


@dataclass(frozen=True, slots=True)
class Page:
    """What every page's handler needs from the app."""

    settings: Settings
    box: SecretBox


def _page(request: Request) -> Page:
    return Page(request.app.state.settings, request.app.state.secret_box)


App = Annotated[Page, Depends(_page)]


class WebSessions:
    """The workspace's sessions, as the pages a provider's consent screen returns to ask for them
    (``app.state.browser_sessions``)."""

    async def user_of(self, request: Request, session: AsyncSession) -> uuid.UUID | None:
        return await signed_in(request, session)


async def signed_in(request: Request, session: AsyncSession) -> uuid.UUID | None:
    """The user the browser's session names, or None: a page then sends the browser to sign in."""
    return await sign_in.session_user(session, request.cookies.get(SESSION_COOKIE))


def brand_name(brands: list[tuple[uuid.UUID, str]], brand: uuid.UUID) -> str:
    """The name of ``brand`` among the user's ``brands`` (crm.membership.user_brands); empty if not there."""
    return next((name for id_, name in brands if id_ == brand), "")


def redirect(url: str) -> Response:
    return guarded(RedirectResponse(url, status_code=303))


def _form_page(request: Request, app: Page, template: str, status: int = 200, **context: Any) -> Response:
    """A page with a form shown before sign-in: it gets a form cookie to anchor its CSRF token if it has none."""
    anchor = csrf_anchor(request)
    fresh = anchor is None
    if anchor is None:
        anchor = new_form_anchor()
    response = render(template, app.box, anchor, status=status, **context)
    if fresh:
        set_cookie(response, app.settings, FORM_COOKIE, anchor, max_age=None)
    return response


def refused(request: Request, app: Page) -> Response:
    return render("refused.html", app.box, csrf_anchor(request), status=403)


def not_found(request: Request, app: Page, user: Any = None) -> Response:
    return render("not_found.html", app.box, csrf_anchor(request), status=404, user=user)


async def form_with_csrf(request: Request, app: Page) -> dict[str, Any] | None:
    """The posted form's fields, or None when it does not carry the right CSRF token."""
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    return fields if csrf_valid(app.box, request, fields.get(CSRF_FIELD)) else None


@router.get("", name="workspace-bare")
@router.get("/", name="workspace")
async def workspace(request: Request, app: App, session: Session) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    brands = await user_brands(session, user)
    if not brands:
        return render("no_brands.html", app.box, csrf_anchor(request), user=await user_row(session, user))
    return redirect(f"/app/brands/{brands[0][0]}/campaigns")


@router.get("/brands")
async def switch_brand(brand: uuid.UUID) -> Response:
    """The brand switcher's form, which works without JavaScript: a GET naming the brand to show."""
    return redirect(f"/app/brands/{brand}/campaigns")


def _outbox(settings: Settings) -> Path | None:
    """The folder the service's mail goes to when it goes to the outbox (the default), else None."""
    return outbox_folder(settings).resolve() if transport_name(settings) == "outbox" else None


@router.get("/sign-in")
async def sign_in_form(request: Request, app: App) -> Response:
    return _form_page(request, app, "sign_in.html", outbox=_outbox(app.settings))


@router.post("/sign-in")
async def ask_for_link(request: Request, app: App, session: Session) -> Response:
    fields = await form_with_csrf(request, app)
    if fields is None:
        return refused(request, app)
    email = fields.get("email", "").strip()
    if email:
        await sign_in.mail_link(session, email)
    # The same answer whether or not the address has an account.
    return _form_page(request, app, "link_sent.html", email=email, outbox=_outbox(app.settings))


@router.get("/sign-in/{token}")
async def confirm_form(request: Request, app: App, token: str) -> Response:
    """The link's page asks for a click: mail scanners that fetch every link in a message do not sign in."""
    try:
        read_sign_in(app.box, token)
    except (InvalidToken, ValueError):
        return _form_page(request, app, "link_refused.html", status=400)
    return _form_page(request, app, "confirm.html", token=token)


@router.post("/sign-in/{token}")
async def confirm(request: Request, app: App, session: Session, token: str) -> Response:
    if await form_with_csrf(request, app) is None:
        return refused(request, app)
    try:
        user = await sign_in.consume_link(session, read_sign_in(app.box, token))
    except (InvalidToken, ValueError):
        user = None
    if user is None:
        return _form_page(request, app, "link_refused.html", status=400)
    # A browser signed in as someone else before: that session ends here rather than linger unseen.
    earlier = request.cookies.get(SESSION_COOKIE)
    if earlier:
        await sign_in.end_session(session, earlier)
    session_id = await sign_in.start_session(session, user)
    response = redirect("/app/")
    set_cookie(response, app.settings, SESSION_COOKIE, session_id, max_age=sign_in.IDLE_DAYS * 86400)
    clear_cookie(response, app.settings, FORM_COOKIE)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, app: App, session: Session) -> Response:
    if await form_with_csrf(request, app) is None:
        return refused(request, app)
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        await sign_in.end_session(session, session_id)
    response = redirect(SIGN_IN_PAGE)
    clear_cookie(response, app.settings, SESSION_COOKIE)
    return response


@router.get("/brands/{brand}/campaigns")
async def campaigns(
    request: Request,
    app: App,
    session: Session,
    brand: uuid.UUID,
    q: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    user = await signed_in(request, session)
    if user is None:
        return redirect(SIGN_IN_PAGE)
    me = await user_row(session, user)
    brands = await user_brands(session, user)
    try:
        rows, total = await reads.brand_campaigns(
            await driver_connection(session),
            brand,
            user,
            status="any",
            start=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
            order="-created_at",
            subject_contains=q.strip() or None,
        )
    except Forbidden:
        return not_found(request, app, user=me)
    current = brand_name(brands, brand)
    return render(
        "campaigns.html",
        app.box,
        csrf_anchor(request),
        user=me,
        brands=brands,
        brand=brand,
        brand_name=current,
        campaigns=campaign_rows(rows),
        total=total,
        q=q,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
    )


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
async def static_file(name: str) -> Response:
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        return guarded(Response("no such file", status_code=404, media_type="text/plain"))
    return guarded(FileResponse(STATIC / name, media_type=media_type))


# Last: any other path under /app/ is a page that does not exist, answered as a page, with the page headers.
@router.get("/{path:path}")
async def no_such_page(request: Request, app: App, path: str) -> Response:
    return not_found(request, app)


async def user_row(session: AsyncSession, user: uuid.UUID) -> User | None:
    return await session.get(User, user)
