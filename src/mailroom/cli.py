"""The `mailroom` command: serve | worker | migrate | bootstrap | login-link | token create | list | revoke."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from mailroom.config import Settings
from mailroom.db import make_engine, make_sessionmaker, resolve_database_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from mailroom.crm.models import Brand, User

T = TypeVar("T")

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="mailroom: email campaigns for your CRM.")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PR_SET_PDEATHSIG = 1
# How much CPU priority serve's worker child gives up to the API processes beside it: sending is a
# background task measured in minutes, an API answer in milliseconds.
WORKER_CHILD_NICENESS = 5
# A worker finishes the chunk it is sending before it exits; past this it is killed.
CHILD_STOP_SECONDS = 20.0
SERVE_PID_ENV = "MAILROOM_SERVE_PID"
token_cli = typer.Typer(no_args_is_help=True, help="API tokens.")
cli.add_typer(token_cli, name="token")


def _settings(*, resolve_key: bool = True) -> Settings:
    """Settings from the environment; a bad value ends the command with one line naming the variable."""
    from pydantic import ValidationError

    try:
        settings = Settings()
        if resolve_key:
            settings.resolved_secret_key()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "MAILROOM_" + "_".join(str(part) for part in first["loc"]).upper()
        typer.echo(f"error: {name}: {str(first['msg']).removeprefix('Value error, ')}", err=True)
        raise typer.Exit(1) from None
    except (ValueError, OSError) as exc:  # the generated key file is unreadable or was altered
        typer.echo(f"error: MAILROOM_SECRET_KEY is unset and the generated key cannot be used: {exc}", err=True)
        raise typer.Exit(1) from None
    return settings


def _check_storage(settings: Settings) -> None:
    """serve and worker read and write uploaded files: a storage this install cannot use stops them at once."""
    from mailroom.files.storage import StorageNotInstalled, check_installed

    try:
        check_installed(settings)
    except StorageNotInstalled as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _prepare(settings: Settings) -> str:
    """Resolve (or start) the database and bring its schema up to date."""
    from mailroom.migrate import migrate

    # SIGTERM must run atexit handlers, or an embedded PostgreSQL outlives us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    url = resolve_database_url(settings)
    migrate(url)
    return url


@cli.command()
def migrate() -> None:
    """Apply database migrations."""
    _prepare(_settings(resolve_key=False))
    typer.echo("database is up to date", err=True)


def _logging(settings: Settings) -> None:
    from mailroom.logs import configure_logging

    configure_logging(settings.log_format)


def _share_metrics(settings: Settings, *, wipe: bool) -> None:
    """Keep prometheus-client's counts in files under data_dir/metrics, so the API's /metrics also
    reports what its worker child counted. Set before anything imports prometheus_client, which
    picks its storage at import. The owner (serve) wipes it at start: files of an earlier run's
    processes would otherwise be summed in forever."""
    if os.environ.get(MULTIPROC_ENV):
        return  # the operator chose a directory (and its lifecycle) already
    directory = (settings.data_dir / "metrics").resolve()
    if wipe:
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)


def _reserve_port(host: str, port: int) -> socket.socket:
    """The API's address, bound before the database, the metrics folder or a worker child is touched: a
    serve whose port is taken (most often by a serve already running) must fail leaving that one alone.
    One API process serves on this socket; with several, uvicorn binds the address again the moment it
    is closed, just before they start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn sets it: the address can be bound again at once after this socket is closed.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        message = f"error: cannot listen on {where}: {exc.strerror or exc}"
        if exc.errno == errno.EADDRINUSE:
            message += " (another mailroom serve may be running there; choose another port with --port)"
        typer.echo(message, err=True)
        raise typer.Exit(1) from None
    return sock


def _start_worker_child(database_url: str) -> subprocess.Popen[bytes]:
    """`mailroom worker` as a child: sending never competes with the API for its event loop, and yields
    the CPU to the API processes when both want it."""
    env = {**os.environ, "MAILROOM_DATABASE_URL": database_url}  # the embedded server this process started
    command = [sys.executable, "-m", "mailroom", "worker", "--parent", str(os.getpid())]
    command += ["--nice", str(WORKER_CHILD_NICENESS)]
    return subprocess.Popen(command, env=env)


def _stop_worker_child(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=CHILD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _follow_parent(parent: int) -> None:
    """End this process (as if by SIGTERM) when the parent `serve` goes, however it goes."""
    if sys.platform.startswith("linux"):
        # The kernel signals us the moment the parent exits, even on kill -9.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def watch() -> None:
        # Elsewhere (and should the parent have died before prctl): an orphan is re-parented.
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    worker: Annotated[bool, typer.Option(help="Also run a sending worker, in a child process.")] = True,
    workers: Annotated[
        int | None, typer.Option(min=1, help="API processes sharing the port (default: one per core).")
    ] = None,
) -> None:
    """Run the HTTP API (OpenAPI page at /docs), with a sending worker unless --no-worker."""
    from mailroom.banner import announce_when_up, banner, bootstrap_command, local_address
    from mailroom.crm.service import any_user

    settings = _settings()
    _check_storage(settings)
    reserved = _reserve_port(host, port)
    port = reserved.getsockname()[1]  # the one chosen, when asked for any (0)
    embedded = not settings.database_url
    url = _prepare(settings)
    _logging(settings)
    _share_metrics(settings, wipe=True)
    processes = workers or os.cpu_count() or 1
    users = asyncio.run(_in_transaction(settings, any_user))
    first_step = None if users else bootstrap_command(settings, embedded=embedded)

    import uvicorn

    child = _start_worker_child(url) if worker else None
    try:
        announce_when_up(host, port, *banner(settings, local_address(host, port), first_step=first_step))
        if processes == 1:
            from mailroom.app import create_app

            # log_config=None: uvicorn's records go to our root handler, in our format (see mailroom.logs).
            config = uvicorn.Config(
                create_app(settings), host=host, port=port, log_level="info", log_config=None, access_log=False
            )
            # The reserved socket itself: the port cannot be taken between the check and serving.
            uvicorn.Server(config).run(sockets=[reserved])
        else:
            # Each process builds its own app from the environment: the database (embedded or not) is the
            # one resolved here, and the metrics directory is shared, so /metrics sums every process.
            os.environ["MAILROOM_DATABASE_URL"] = url
            os.environ[SERVE_PID_ENV] = str(os.getpid())
            reserved.close()  # uvicorn's supervisor binds the address again at once, for its processes to share
            uvicorn.run(
                "mailroom.cli:api_process",
                factory=True,
                host=host,
                port=port,
                workers=processes,
                log_level="info",
                log_config=None,
                access_log=False,  # mailroom's own (api/access_log.py)
            )
    finally:
        reserved.close()
        if child is not None:
            _stop_worker_child(child)


def api_process() -> Any:
    """The app of one process of `mailroom serve --workers N`."""
    from mailroom.app import create_app

    # Spawned by serve's process supervisor: a serve killed outright must not leave its port held. Its pid
    # comes from serve, not getppid(): a serve killed while this process was starting has already handed
    # it to another parent, which getppid() would name and which would never go.
    _follow_parent(int(os.environ[SERVE_PID_ENV]))
    settings = _settings()
    _logging(settings)
    return create_app(settings)


@cli.command("worker")
def worker_command(
    concurrency: Annotated[int, typer.Option(help="Send jobs run at once in this process.")] = 8,
    parent: Annotated[int | None, typer.Option(hidden=True, help="Stop when this process is gone.")] = None,
    nice: Annotated[
        int, typer.Option(min=0, max=19, help="Lower this process's CPU priority by this much (as nice(1) does).")
    ] = 0,
) -> None:
    """Execute due campaigns and send their mail. Run as many as needed, on as many machines."""
    if nice:
        os.nice(nice)  # its rendering processes, started later, inherit it
    if parent is not None:
        _follow_parent(parent)
    settings = _settings()
    _check_storage(settings)
    _prepare(settings)
    _logging(settings)
    _share_metrics(settings, wipe=False)
    if parent is None:  # serve's own worker child: serve's banner says it already
        _warn_of_undeliverable_sender(settings)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(work_and_settle(settings, concurrency))


def _warn_of_undeliverable_sender(settings: Settings) -> None:
    from mailroom.transports.registry import undeliverable_sender

    if warning := undeliverable_sender(settings):
        logging.getLogger("mailroom.worker").warning(warning)


async def work_and_settle(settings: Settings, concurrency: int) -> None:
    """Sending, counting what happened after, and the daily re-check of sending domains' DNS records: the
    settler lives here because sending cannot import tracking (a layer above it), and the re-check beside it,
    since a worker process is where long-running work goes. Any one ending (or failing) stops the others, so
    the process exits and is restarted whole."""
    from mailroom.domains.service import recheck_forever
    from mailroom.sending.jobs import run_worker
    from mailroom.tracking.settle import run_settler

    engine = make_engine(resolve_database_url(settings), pool_size=2)
    tasks = [
        asyncio.create_task(run_worker(settings, concurrency=concurrency)),
        asyncio.create_task(run_settler(make_sessionmaker(engine))),
        asyncio.create_task(recheck_forever(settings)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.dispose()


async def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from mailroom.errors import MailroomError

    engine = make_engine(resolve_database_url(settings), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            return await work(session)
    except MailroomError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        await engine.dispose()


@cli.command()
def bootstrap(
    brand: Annotated[str, typer.Option(help="Name of the new brand.")],
    email: Annotated[str, typer.Option(help="Email address of its first Admin.")],
    first: Annotated[str | None, typer.Option(help="Admin's first name.")] = None,
    last: Annotated[str | None, typer.Option(help="Admin's last name.")] = None,
) -> None:
    """Create a brand, a confirmed Admin user and an API token; print them as JSON.

    An address that is already an Admin of a brand gets that brand and a new token: no second brand."""
    from mailroom.addresses import is_address
    from mailroom.crm.service import administered_brand, create_token
    from mailroom.crm.service import bootstrap as do_bootstrap

    if not is_address(email.strip()):
        raise typer.BadParameter("is not a valid email address", param_hint="--email")
    settings = _settings()
    _prepare(settings)

    async def work(session: AsyncSession) -> tuple[Brand, User, str, bool]:
        found = await administered_brand(session, email=email, name=brand)
        if found is not None:
            return *found, await create_token(session, user=found[1].id), False
        return *await do_bootstrap(session, brand_name=brand, email=email, first_name=first, last_name=last), True

    made_brand, user, token, created = asyncio.run(_in_transaction(settings, work))
    if not created:
        typer.echo(
            f'{user.email} is already an Admin of brand "{made_brand.name}": no brand was made; '
            "here are that brand, the user and a new token (earlier tokens still work)",
            err=True,
        )
    typer.echo(json.dumps({"brand": str(made_brand.id), "user": str(user.id), "token": token}))


@cli.command("login-link")
def login_link(email: Annotated[str, typer.Option(help="The address of the user to sign in.")]) -> None:
    """Print a link that signs the user into the workspace: once, within 15 minutes."""
    from mailroom.crm.notices import sign_in_url
    from mailroom.crm.service import find_user
    from mailroom.crypto import SecretBox
    from mailroom.errors import NotFound
    from mailroom.web.sign_in import new_link

    settings = _settings()
    _prepare(settings)

    async def work(session: AsyncSession) -> uuid.UUID:
        user = await find_user(session, email)
        if user is None:
            raise NotFound(f"no user has the address {email.strip()}")
        return await new_link(session, user.id)

    link = asyncio.run(_in_transaction(settings, work))
    typer.echo(sign_in_url(SecretBox(settings.resolved_secret_key()), settings.public_url, link))


@token_cli.command("create")
def token_create(
    user: Annotated[uuid.UUID, typer.Option(help="The user's id.")],
    name: Annotated[str | None, typer.Option(help="A name to tell the token apart.")] = None,
    expires_in_days: Annotated[int | None, typer.Option(help="Days until it stops working; default: never.")] = None,
) -> None:
    """Print a new API token for a user."""
    from mailroom.crm.tokens import MAX_TOKEN_DAYS, issue_token

    if name is not None and not 0 < len(name.strip()) <= 200:
        raise typer.BadParameter("must be 1 to 200 characters", param_hint="--name")
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
        raise typer.BadParameter(f"must be 1 to {MAX_TOKEN_DAYS}", param_hint="--expires-in-days")
    settings = _settings()
    _prepare(settings)
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None

    async def work(session: AsyncSession) -> str:
        return (await issue_token(session, user=user, name=name and name.strip(), expires_at=expires_at))[1]

    typer.echo(asyncio.run(_in_transaction(settings, work)))


@token_cli.command("list")
def token_list(user: Annotated[uuid.UUID, typer.Option(help="The user's id.")]) -> None:
    """Print a user's API tokens, one JSON object a line (never the tokens themselves)."""
    from mailroom.crm.schemas import TokenOut, token_out
    from mailroom.crm.tokens import list_tokens

    settings = _settings()
    _prepare(settings)

    async def work(session: AsyncSession) -> list[TokenOut]:
        return [token_out(row) for row in await list_tokens(session, user=user)]

    for row in asyncio.run(_in_transaction(settings, work)):
        typer.echo(json.dumps(row, default=str))


@token_cli.command("revoke")
def token_revoke(token: Annotated[uuid.UUID, typer.Argument(help="The token's id (from token list).")]) -> None:
    """Revoke an API token: it stops working at once."""
    from mailroom.crm.tokens import revoke_token

    settings = _settings()
    _prepare(settings)

    async def work(session: AsyncSession) -> None:
        await revoke_token(session, token_id=token, user=None)

    asyncio.run(_in_transaction(settings, work))
    typer.echo("revoked", err=True)


def main() -> None:
    cli()
