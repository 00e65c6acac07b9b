"""Settings: one object, read from the environment (prefix MAILROOM_) when the process starts.

Nothing reads settings at import time; the CLI builds a Settings and hands it to whatever needs it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILROOM_", extra="ignore")

    # A postgresql:// URL. Unset: an embedded PostgreSQL is started in data_dir/pgdata.
    database_url: str | None = None
    data_dir: Path = Path("var")
    # Used to encrypt stored provider tokens and to sign public links. Unset: generated once and kept
    # in data_dir/secret.key so restarts keep reading what was encrypted before.
    secret_key: str | None = None
    public_url: str = "http://127.0.0.1:8000"

    # Sending (used by the worker).
    transport: str | None = Field(default=None, description="outbox | smtp | mailgun; default: inferred")
    smtp_url: str | None = None
    smtp_connections: int = 4
    mailgun_api_url: str = "https://api.mailgun.net"
    mailgun_api_key: str | None = None
    mailgun_domain: str | None = None
    rate_limit: float | None = None
    # Attachment links are fetched by the server; private addresses stay off limits unless allowed.
    allow_private_attachment_links: bool = False
    # Recipients per send job: big enough to amortise a job, small enough to spread over workers.
    batch_size: int = 500
    # User templates render in child processes (per API process and per worker), each capped in
    # memory; one request (a chunk of recipients, or one create-time check) may take
    # render_seconds plus render_seconds_per_message for each message it renders.
    render_processes: int = 2
    render_seconds: float = 2.0
    render_seconds_per_message: float = 0.05
    render_memory_mib: int = 512

    def resolved_secret_key(self) -> str:
        """The configured key, or the one generated for this data dir on first use."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(key)
        tmp.chmod(0o600)
        tmp.replace(path)
        return key
