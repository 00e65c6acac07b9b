"""create_app(): the HTTP service. Clients (engine, secrets) are built here, never at import."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import Field
from sqlalchemy import text
from starlette.types import Receive, Scope, Send
from typing_extensions import TypedDict

from mailroom.api.access_log import AccessLog
from mailroom.api.campaigns import router as campaigns_router
from mailroom.api.crm import router as crm_router
from mailroom.api.docs import router as docs_router
from mailroom.api.domains import router as domains_router
from mailroom.api.envelope import ORJSONResponse
from mailroom.api.errors import install_error_handlers
from mailroom.api.events import router as events_router
from mailroom.api.files import UPLOAD_BODY_LIMIT
from mailroom.api.files import router as files_router
from mailroom.api.hot_paths import HotPaths
from mailroom.api.hot_paths import install as install_hot_paths
from mailroom.api.limits import BodyLimitMiddleware, BodyLimits
from mailroom.api.mailbox_actions import router as mailbox_actions_router
from mailroom.api.mailboxes import router as mailboxes_router
from mailroom.api.metrics import RequestMetrics
from mailroom.api.metrics import router as metrics_router
from mailroom.api.notifications import router as notifications_router
from mailroom.api.openapi import describe_api
from mailroom.api.routing import RoutesBySegment, flatten
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.api.suppressions import router as suppressions_router
from mailroom.api.tracking import install as install_tracking
from mailroom.api.tracking import router as tracking_router
from mailroom.api.unsubscribe import router as unsubscribe_router
from mailroom.campaigns.answers import AnswerCache
from mailroom.config import Settings
from mailroom.crm.tokens import TokenCheck
from mailroom.crypto import SecretBox
from mailroom.db import ReadPool, make_engine, make_sessionmaker, resolve_database_url
from mailroom.files.storage import storage_from_settings
from mailroom.serialize import closed
from mailroom.templating.renderer import RenderLimits, RenderPool
from mailroom.web.account import router as account_router
from mailroom.web.compose import router as compose_router
from mailroom.web.compose_files import COMPOSE_BODY_LIMIT, COMPOSE_PATHS
from mailroom.web.mailboxes import router as mailboxes_page_router
from mailroom.web.notifications import router as notifications_page_router
from mailroom.web.pages import WebSessions
from mailroom.web.pages import router as workspace_router
from mailroom.web.report import router as report_router
from mailroom.web.suppressions import router as suppressions_page_router


@closed
class HealthOut(TypedDict):
    """The service is up: answered only once its database has answered too (a failure is a 500)."""

    status: Annotated[Literal["ok"], Field(description="Always ok")]


def create_app(settings: Settings) -> FastAPI:
    database_url = resolve_database_url(settings)
    engine = make_engine(database_url)
    # Create-time template checks run here, bounded; its processes start on first use.
    renderer = RenderPool(RenderLimits.from_settings(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await dispose(app)

    app = MailroomAPI(
        title="mailroom",
        summary="Email campaigns for real-estate CRMs: schedule, send and track.",
        version="0.1.0",
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
        # /docs is served from the package (api/docs.py), never from a CDN.
        docs_url=None,
        redoc_url=None,
        # mailroom reports through /metrics and its logs, not OpenTelemetry. Left on, FastAPI asks the global
        # providers at every request whether anyone is listening.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.read_pool = ReadPool(database_url)
    app.state.token_check = TokenCheck(app.state.read_pool.connection)
    app.state.campaign_answers = AnswerCache()
    app.state.renderer = renderer
    app.state.secret_box = SecretBox(settings.resolved_secret_key())
    # Pages a browser reaches without an API token act for the user its workspace session names.
    app.state.browser_sessions = WebSessions()
    install_tracking(app.state, app.state.secret_box)
    app.state.storage = storage_from_settings(settings, app.state.secret_box)
    install_error_handlers(app)
    # Multipart framing around an imported file is a few hundred bytes; 64 KiB leaves room for any client.
    import_limit = settings.max_import_body + 64 * 1024
    app.add_middleware(
        BodyLimitMiddleware,
        limits=BodyLimits(
            default=settings.max_body,
            larger=((re.compile(r"/brands/[^/]+/contacts/import\Z"), import_limit),),
            deadline=settings.body_timeout,
            # Uploads, and the workspace's compose form which carries files, are written to storage as they
            # arrive, never buffered whole.
            streamed=(
                (re.compile(r"/emails/attachments\Z"), UPLOAD_BODY_LIMIT),
                (COMPOSE_PATHS, COMPOSE_BODY_LIMIT),
            ),
            streamed_deadline=settings.upload_timeout,
        ),
        authenticate=app.state.token_check.is_live,
    )
    app.state.access_log = AccessLog() if settings.access_log else None
    # Outermost, so the time a body takes to arrive counts too.
    app.add_middleware(RequestMetrics, access_log=app.state.access_log)

    # The app's own routes are built as the routers' are: refusing query parameters they do not read.
    app.router.route_class = StrictQueryRoute

    # Not in the envelope: load balancers and probes read it as it is.
    @app.get("/health", tags=["service"], response_model=HealthOut, summary="Whether the service can answer")
    async def health() -> ORJSONResponse:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        answer: HealthOut = {"status": "ok"}
        return ORJSONResponse(answer)

    app.include_router(crm_router)
    app.include_router(mailboxes_router)
    # Before the campaigns' /emails/{id} routes, so /emails/events and /emails/view/<token> (a public link)
    # are never read as campaign ids.
    app.include_router(events_router)
    app.include_router(tracking_router)
    # Before the campaigns' /emails/{id}, which would take /emails/domain for a campaign id.
    app.include_router(domains_router)
    app.include_router(campaigns_router)
    app.include_router(mailbox_actions_router)
    app.include_router(files_router)
    app.include_router(unsubscribe_router)
    app.include_router(suppressions_router)
    app.include_router(notifications_router)
    app.include_router(metrics_router)
    app.include_router(docs_router)
    # Before the workspace's own router, whose last route answers every other /app/ path as not found.
    app.include_router(account_router)
    app.include_router(compose_router)
    app.include_router(mailboxes_page_router)
    app.include_router(notifications_page_router)
    app.include_router(suppressions_page_router)
    app.include_router(report_router)
    app.include_router(workspace_router)
    included = list(app.router.routes)
    app.router.routes[:] = [RoutesBySegment(flatten(included))]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_api(
                get_openapi(title=app.title, version=app.version, summary=app.summary, routes=included), included
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.hot_paths = install_hot_paths(app)
    return app


async def dispose(app: FastAPI) -> None:
    """Stop what create_app started: the rendering processes and the database connections."""
    if app.state.access_log is not None:
        app.state.access_log.flush()
    await app.state.renderer.aclose()
    await app.state.read_pool.close()
    await app.state.engine.dispose()


class MailroomAPI(FastAPI):
    """The app, with its hottest public paths answered before routing (see api/hot_paths.py)."""

    hot_paths: HotPaths | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hot_paths is not None:
            onward = await self.hot_paths.handle(scope, receive, send)
            if onward is None:
                return
            receive = onward
        await super().__call__(scope, receive, send)
