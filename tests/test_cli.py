"""The command line a newcomer uses: bootstrap prints a working token; token create prints another."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.banner import bootstrap_command
from mailroom.config import Settings
from tests.support.workers import clean_env, worker_env, worker_group
from tests.support.world import World

MAILROOM = str(Path(sys.executable).with_name("mailroom"))


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MAILROOM_DATABASE_URL": str(settings.database_url),
        "MAILROOM_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.run([MAILROOM, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_bootstrap_then_the_readme_steps_work(settings: Settings, client: httpx.AsyncClient) -> None:
    done = run(settings, "bootstrap", "--brand", "Acme Realty", "--email", "you@example.com", "--first", "Ann")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert set(made) == {"brand", "user", "token"}
    auth = {"Authorization": f"Bearer {made['token']}", "X-Rechat-Brand": made["brand"]}
    contacts = await client.post(
        f"/brands/{made['brand']}/contacts",
        json={"contacts": [{"emails": ["jane@example.com"], "first_name": "Jane", "tags": ["buyers"]}]},
        headers=auth,
    )
    assert contacts.status_code == 200, contacts.text
    campaign = await client.post(
        "/emails",
        json={
            "from": made["user"],
            "subject": "Open house on Sunday",
            "html": "<p>Hi {{recipient.first_name}}!</p>",
            "to": [{"recipient_type": "Tag", "tag": "buyers"}],
            "due_at": "2030-01-01T15:00:00Z",
        },
        headers=auth,
    )
    assert campaign.status_code == 200, campaign.text
    assert campaign.json()["data"]["individual"] is True

    again = run(settings, "token", "create", "--user", made["user"])
    assert again.returncode == 0, again.stderr
    token = again.stdout.strip()
    assert token.startswith("mr_") and token != made["token"]
    me = await client.get(f"/brands/{made['brand']}/emails/quota", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200


async def test_bootstrap_run_twice_answers_the_same_brand_and_a_new_token(
    settings: Settings, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = run(settings, "bootstrap", "--brand", "Acme Realty", "--email", "you@example.com", "--first", "Ann")
    assert first.returncode == 0, first.stderr
    # Again, the token lost, the address typed differently: the same brand and user, a new token, said so.
    again = run(settings, "bootstrap", "--brand", "Acme Realty", "--email", "You@Example.com")
    assert again.returncode == 0, again.stderr
    made, found = json.loads(first.stdout), json.loads(again.stdout)
    assert (found["brand"], found["user"]) == (made["brand"], made["user"]) and found["token"] != made["token"]
    assert "already an Admin" in again.stderr and "Acme Realty" in again.stderr and "no brand was made" in again.stderr
    assert (await session.execute(text("SELECT count(*) FROM brands"))).scalar_one() == 1
    for token in (made["token"], found["token"]):
        answer = await client.get(f"/brands/{made['brand']}/emails/quota", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
    # Another address still gets a brand of its own.
    other = run(settings, "bootstrap", "--brand", "Acme Realty", "--email", "bo@example.com")
    assert other.returncode == 0 and json.loads(other.stdout)["brand"] != made["brand"], other.stderr
    assert "already" not in other.stderr


def test_bad_arguments_are_refused_without_a_traceback(settings: Settings) -> None:
    done = run(settings, "bootstrap", "--brand", "X", "--email", "not-an-address")
    assert done.returncode != 0
    assert "--email" in done.stderr and "Traceback" not in done.stderr
    done = run(settings, "token", "create", "--user", "00000000-0000-0000-0000-000000000000")
    assert done.returncode != 0
    assert "no such user" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["migrate"], ["serve", "--port", "0"], ["worker"]])
def test_a_weak_secret_key_stops_the_service_at_start_with_one_line(settings: Settings, command: list[str]) -> None:
    env = {**clean_env(), "MAILROOM_DATABASE_URL": str(settings.database_url), "MAILROOM_SECRET_KEY": "changeme"}
    done = subprocess.run([MAILROOM, *command], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "MAILROOM_SECRET_KEY" in lines[0] and "32 random bytes" in lines[0], done.stderr


def test_a_damaged_generated_key_file_stops_the_worker_with_one_line(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("")
    env = {**clean_env(), "MAILROOM_DATABASE_URL": str(settings.database_url), "MAILROOM_DATA_DIR": str(tmp_path)}
    done = subprocess.run([MAILROOM, "worker"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "secret.key" in lines[0], done.stderr


# Five runs of the command line, each a new Python process: over 3 s.
@pytest.mark.slow
async def test_tokens_are_created_listed_and_revoked_from_the_command_line(
    settings: Settings, world: World, client: httpx.AsyncClient
) -> None:
    ann = await world.brand_admin()
    made = run(settings, "token", "create", "--user", str(ann.user), "--name", "backup job", "--expires-in-days", "7")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert (await client.get("/users/self/tokens", headers={"Authorization": f"Bearer {token}"})).status_code == 200

    listed = run(settings, "token", "list", "--user", str(ann.user))
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 2 and token not in listed.stdout
    (backup,) = [row for row in rows if row["name"] == "backup job"]
    assert backup["hint"] == token[:7] and backup["revoked_at"] is None
    assert 6.9 * 86400 < backup["expires_at"] - time.time() < 7.1 * 86400

    revoked = run(settings, "token", "revoke", backup["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert (await client.get("/users/self/tokens", headers={"Authorization": f"Bearer {token}"})).status_code == 401
    assert (await client.get("/users/self/tokens", headers={"Authorization": f"Bearer {ann.token}"})).status_code == 200

    for args in (
        ["token", "revoke", "00000000-0000-0000-0000-000000000000"],
        ["token", "create", "--user", str(ann.user), "--expires-in-days", "0"],
    ):
        done = run(settings, *args)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr


def test_the_printed_first_step_names_a_data_folder_chosen_in_the_environment(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve's banner prints this; the other terminal it is pasted in may not have the variable.
    chosen = Settings(data_dir=tmp_path / "my data", secret_key=settings.secret_key)
    monkeypatch.setenv("MAILROOM_DATA_DIR", str(chosen.data_dir))
    words = shlex.split(bootstrap_command(chosen, embedded=True))
    assert words[0] == f"MAILROOM_DATA_DIR={tmp_path / 'my data'}"
    assert words[words.index("bootstrap") :] == [
        "bootstrap", "--brand", "Acme Realty", "--email", "you@example.com", "--first", "Ann", "--last", "Lee"
    ]  # fmt: skip
    # With a database URL configured there is no folder to name; nor when the default folder is in use.
    assert not shlex.split(bootstrap_command(chosen, embedded=False))[0].startswith("MAILROOM_")
    monkeypatch.delenv("MAILROOM_DATA_DIR")
    assert not shlex.split(bootstrap_command(chosen, embedded=True))[0].startswith("MAILROOM_")


def test_a_worker_started_on_a_loopback_public_url_warns_that_its_own_mail_cannot_be_delivered(
    settings: Settings, tmp_path: Path
) -> None:
    env = worker_env(str(settings.database_url), tmp_path, public_url="http://localhost:8000")
    with worker_group(env, tmp_path / "logs") as group:
        worker = group.start()
        deadline = time.monotonic() + 60
        while "worker started" not in (log := worker.log_tail()):
            assert worker.alive and time.monotonic() < deadline, log
            time.sleep(0.1)
    (warning,) = [line for line in log.splitlines() if "WARNING" in line]
    assert "From no-reply@[127.0.0.1]" in warning and "MAILROOM_DEFAULT_FROM" in warning
    assert "MAILROOM_PUBLIC_URL" in warning


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_a_bucket_configured_without_s3_support_installed_stops_the_service_naming_the_extra(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    # As if installed without the s3 extra: an importable boto3 that is not there.
    hidden = tmp_path / "without-s3" / "boto3"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'boto3'\", name='boto3')\n")
    env = worker_env(str(settings.database_url), tmp_path, s3_bucket="uploads")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hidden.parent), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([MAILROOM, *command], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "MAILROOM_S3_BUCKET" in lines[0] and "mailroom[s3]" in lines[0], done.stderr
