"""`mailroom serve` as an operator runs it: a worker child that sends, JSON logs, and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from mailroom.cli import WORKER_CHILD_NICENESS
from mailroom.config import Settings
from mailroom.crm.tokens import HOLDER_TTL
from tests.support.workers import MAILROOM, _descendants, worker_env
from tests.support.world import World

SECRET_PATH_TOKEN = "tok3nThatMustNeverBeLogged"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status is left to collect


@contextlib.contextmanager
def serving(
    settings: Settings, data_dir: Path, log: Path, *args: str, **env_settings: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = worker_env(str(settings.database_url), data_dir, log_format="json", **env_settings)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(MAILROOM), "serve", "--port", str(port), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield process, port
    finally:
        for pid in [process.pid, *_descendants(process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)


def niceness(pid: int) -> int:
    """Field 19 of /proc/<pid>/stat."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def worker_children(pid: int) -> list[int]:
    """Direct children of serve running `mailroom worker` (the worker's own helpers are its children)."""
    direct = [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]
    return [p for p in direct if b"worker" in Path(f"/proc/{p}/cmdline").read_bytes()]


async def wait_for(check: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.2)


# `mailroom serve` with its worker child, started and stopped: over 3 s.
@pytest.mark.slow
async def test_serve_sends_through_a_worker_child_logs_json_and_stops_it(
    world: World, settings: Settings, tmp_path: Path
) -> None:
    admin = await world.brand_admin()
    await world.contacts(admin, [{"emails": ["ann@example.com"], "tags": ["t"]}])
    made = admin.data(
        await admin.post(
            "/emails/individual",
            {"subject": "News", "html": "<p>Hi</p>", "to": [{"recipient_type": "Tag", "tag": "t"}],
             "due_at": datetime.now(UTC).isoformat()},
        )
    )  # fmt: skip
    log = tmp_path / "serve.log"
    with serving(settings, tmp_path / "data", log) as (process, port):
        (child,) = worker_children(process.pid)
        # The child, not the API, executes the due campaign into the outbox.
        outbox = tmp_path / "data" / "outbox"
        await wait_for(lambda: outbox.is_dir() and any(outbox.iterdir()), 30)
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.get(f"http://127.0.0.1:{port}/unsubscribe/{SECRET_PATH_TOKEN}")
            # What the child counted in its own process reaches the API's scrape.
            deadline = time.monotonic() + 30
            while (
                "mailroom_send_latency_seconds_count 1.0"
                not in (scraped := await http.get(f"http://127.0.0.1:{port}/metrics")).text
            ):
                assert time.monotonic() < deadline, scraped.text
                await asyncio.sleep(0.2)
            assert "mailroom_campaigns_executed_total 1.0" in scraped.text
            assert 'mailroom_http_requests_total{method="GET",route="/health",status="200"}' in scraped.text
        assert answer.status_code in (404, 405)
        family = [process.pid, *_descendants(process.pid)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        await wait_for(lambda: not any(alive(pid) for pid in family), 10)
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one JSON object
    assert all({"timestamp", "level", "logger", "message"} <= set(line) for line in lines)
    assert SECRET_PATH_TOKEN not in text
    access = [line for line in lines if line["logger"] == "mailroom.access" and "/unsubscribe/" in line["message"]]
    assert access and "/unsubscribe/<redacted>" in access[0]["message"]
    executed = [line for line in lines if line["message"].startswith(f"campaign {made['id']} executed")]
    finished = [line for line in lines if line["message"].startswith(f"campaign {made['id']} finished")]
    assert len(executed) == 1 and executed[0]["recipients"] == 1 and executed[0]["jobs"] == 1
    assert len(finished) == 1 and finished[0]["sent"] == 1 and finished[0]["failed"] == 0
    assert finished[0]["campaign"] == made["id"] and finished[0]["duration"] >= 0
    assert child not in [p for p in family if alive(p)]


@pytest.mark.slow
async def test_the_worker_child_goes_when_serve_is_killed(settings: Settings, tmp_path: Path) -> None:
    with serving(settings, tmp_path / "data", tmp_path / "serve.log", "--workers", "2") as (process, _):
        (child,) = worker_children(process.pid)
        # Sending yields the CPU to the API (the child lowers its priority as it starts).
        await wait_for(lambda: niceness(child) == niceness(process.pid) + WORKER_CHILD_NICENESS, 10)
        api = api_processes(process.pid)
        assert len(api) == 2
        process.kill()  # kill -9: serve cannot stop its children itself
        process.wait(timeout=30)
        await wait_for(lambda: not alive(child) and not any(alive(p) for p in api), 10)


@pytest.mark.slow
async def test_api_processes_still_starting_go_when_serve_is_killed(settings: Settings, tmp_path: Path) -> None:
    with serving(settings, tmp_path / "data", tmp_path / "serve.log", "--workers", "2", "--no-worker") as (process, _):
        # Killed as soon as the first process answers: the second may still be importing, and must not
        # mistake the process it is handed to for serve.
        assert process.pid in started_for(tmp_path / "data")
        process.kill()
        process.wait(timeout=30)
        await wait_for(lambda: not started_for(tmp_path / "data"), 20)


def started_for(data_dir: Path) -> list[int]:
    """Live processes serving this data folder, wherever they are in the process tree."""
    mark = f"MAILROOM_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if (
                entry.name.isdigit()
                and mark in (entry / "environ").read_bytes().split(b"\0")
                and alive(int(entry.name))
            ):
                found.append(int(entry.name))
    return found


HEALTH_COUNT = re.compile(r'^mailroom_http_requests_total\{method="GET",route="/health",status="200"\} (\S+)$', re.M)


def health_requests(port: int) -> float:
    """What the serve on this port counted of GET /health, read from its /metrics."""
    found = HEALTH_COUNT.search(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    return float(found.group(1)) if found else 0.0


# Two serves started, one of them up: over 3 s.
@pytest.mark.slow
def test_a_second_serve_on_a_taken_port_fails_and_leaves_the_first_alone(settings: Settings, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serving(settings, data, tmp_path / "serve.log", "--workers", "1") as (process, port):
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        counted = health_requests(port)
        assert counted >= 3
        env = worker_env(str(settings.database_url), data)
        second = subprocess.run(
            [str(MAILROOM), "serve", "--port", str(port)], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr and "in use" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        # The first still answers, and what it counted before is still counted: its metrics folder was kept.
        assert process.poll() is None
        assert health_requests(port) >= counted
        assert len(worker_children(process.pid)) == 1


def banners(log: Path) -> list[dict[str, str]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["logger"] == "mailroom.serve"]


def wait_for_banner(log: Path) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while not banners(log):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    time.sleep(1)  # long enough for a second banner, were there one, from the other API process
    (banner,) = banners(log)
    return banner


# Two serves started, one with two API processes: over 3 s.
@pytest.mark.slow
def test_serve_says_once_where_it_is_and_the_first_step_until_someone_has_taken_it(
    settings: Settings, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    loopback = {"public_url": "http://127.0.0.1:8000"}  # the quick start's
    with serving(settings, data, tmp_path / "first.log", "--workers", "2", "--no-worker", **loopback) as (_, port):
        banner = wait_for_banner(tmp_path / "first.log")
    address = f"http://127.0.0.1:{port}"
    assert banner["message"].startswith(f"mailroom is up at {address} (API docs: {address}/docs)")
    assert (banner["address"], banner["docs"]) == (address, f"{address}/docs")
    assert banner["data_dir"] == str(data.resolve()) and banner["outbox"] == str((data / "outbox").resolve())
    assert banner["bootstrap"] in banner["message"]
    # Confirmation mail would go out From an address at loopback: said, with what to set.
    assert "no-reply@[127.0.0.1]" in banner["warning"] and "MAILROOM_DEFAULT_FROM" in banner["warning"]
    assert banner["warning"] in banner["message"]
    # The command printed is the one to run, as printed.
    env = worker_env(str(settings.database_url), data)
    done = subprocess.run(shlex.split(banner["bootstrap"]), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"brand", "user", "token"}

    with serving(settings, data, tmp_path / "again.log", "--workers", "1", "--no-worker"):
        banner = wait_for_banner(tmp_path / "again.log")
    assert "bootstrap" not in banner and "bootstrap" not in banner["message"]
    assert "warning" not in banner  # MAILROOM_PUBLIC_URL is http://mailroom.test


async def test_no_worker_means_no_child(settings: Settings, tmp_path: Path) -> None:
    with serving(settings, tmp_path / "data", tmp_path / "serve.log", "--no-worker") as (process, _):
        assert worker_children(process.pid) == []


def api_processes(pid: int) -> list[int]:
    """The processes of serve's --workers, spawned by uvicorn's supervisor."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]
    return [p for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


# `mailroom serve --workers 2`, and HOLDER_TTL waited out: over 3 s.
@pytest.mark.slow
async def test_several_api_processes_share_the_port_and_a_revoked_token_dies_in_all_of_them(
    settings: Settings, world: World, tmp_path: Path
) -> None:
    ann = await world.brand_admin()
    with serving(settings, tmp_path / "data", tmp_path / "serve.log", "--no-worker", "--workers", "2") as (
        process,
        port,
    ):
        assert len(api_processes(process.pid)) == 2
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {ann.token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as client:
            made = (await client.post("/users/self/tokens", json={"name": "sync"})).json()["data"]
            theirs = {"Authorization": f"Bearer {made['token']}"}
            # Fresh connections, so both processes answer some and remember the token.
            for _ in range(20):
                async with httpx.AsyncClient(base_url=base, headers=theirs) as fresh:
                    assert (await fresh.get("/users/self/tokens")).status_code == 200
            assert (await client.delete(f"/users/self/tokens/{made['id']}")).status_code == 204
            await asyncio.sleep(HOLDER_TTL)  # the longest any process may still trust what it read of it
            for _ in range(20):
                async with httpx.AsyncClient(base_url=base, headers=theirs) as fresh:
                    assert (await fresh.get("/users/self/tokens")).status_code == 401
