"""The bare baseline of bench/api.py: what one authenticated read or write costs with nothing but Starlette,
a psycopg pool and uvicorn (the same uvloop and httptools as mailroom).

    .venv/bin/python bench/bare_api.py --port P --workers N --database-url URL
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import psycopg
import uvicorn
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# The token check a minimal service would make: one statement, the stored SHA-256 of the bearer token.
AUTH = """SELECT u.id FROM api_tokens t JOIN users u ON u.id = t."user" WHERE t.token_hash = %s
    AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.deleted_at IS NULL"""
TABLE = """CREATE TABLE IF NOT EXISTS bare_bench_rows (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), brand uuid,
    subject text, html text, created_at timestamptz NOT NULL DEFAULT now())"""
INSERT = "INSERT INTO bare_bench_rows (brand, subject, html) VALUES (%s, %s, %s) RETURNING *"
pool: AsyncConnectionPool | None = None


async def answer(request: Request, query: str, params: tuple[object, ...], *, many: bool = False) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return Response(b'{"code":"Unauthorized"}', 401, media_type="application/json")
    assert pool is not None
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(AUTH, (hashlib.sha256(token.strip().encode()).digest(),))
        if await cur.fetchone() is None:
            return Response(b'{"code":"Unauthorized"}', 401, media_type="application/json")
        await cur.execute(query, params)
        if many:
            rows = await cur.fetchall()
            return Response(orjson.dumps({"code": "OK", "data": rows}), media_type="application/json")
        row = await cur.fetchone()
    if row is None:
        return Response(b'{"code":"ResourceNotFound"}', 404, media_type="application/json")
    return Response(orjson.dumps({"code": "OK", "data": row}), media_type="application/json")


async def campaign(request: Request) -> Response:
    return await answer(request, "SELECT * FROM email_campaigns WHERE id = %s", (request.path_params["id"],))


async def campaigns(request: Request) -> Response:
    """A page of a brand's campaigns, newest first: the same rows a listing reads, as they come."""
    limit = int(request.query_params.get("limit", "50"))
    query = "SELECT * FROM email_campaigns WHERE brand = %s AND deleted_at IS NULL ORDER BY created_at DESC LIMIT %s"
    return await answer(request, query, (request.path_params["brand"], limit), many=True)


async def campaign_emails(request: Request) -> Response:
    """A page of a campaign's recipient rows, in position order, as they come."""
    limit = int(request.query_params.get("limit", "50"))
    query = "SELECT * FROM email_campaign_emails WHERE campaign = %s ORDER BY seq LIMIT %s"
    return await answer(request, query, (request.path_params["id"], limit), many=True)


async def insert(request: Request) -> Response:
    body = orjson.loads(await request.body())
    return await answer(request, INSERT, (request.headers.get("x-rechat-brand"), body["subject"], body["html"]))


async def health(request: Request) -> Response:
    return Response(b"ok")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global pool
    # At most as many connections per process as mailroom's engine keeps (pool_size 10), and given back
    # 10 s after the load ends: with mailroom's pools the bench must fit in a shared server's max_connections.
    url = os.environ["BARE_DATABASE_URL"]
    pool = AsyncConnectionPool(url, min_size=1, max_size=10, max_idle=10, kwargs={"autocommit": True}, open=False)
    await pool.open()
    yield
    await pool.close()


def create_app() -> Starlette:
    routes = [
        Route("/campaign/{id:uuid}", campaign),
        Route("/campaigns/{brand:uuid}", campaigns),
        Route("/campaign/{id:uuid}/emails", campaign_emails),
        Route("/insert", insert, methods=["POST"]),
        Route("/health", health),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--database-url", required=True)
    args = p.parse_args()
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(TABLE)  # here, once: worker processes racing on CREATE TABLE IF NOT EXISTS can collide
    os.environ["BARE_DATABASE_URL"] = args.database_url  # the worker processes import the app afresh
    here = os.path.dirname(os.path.abspath(__file__))
    uvicorn.run(
        "bare_api:create_app",
        factory=True,
        app_dir=here,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
