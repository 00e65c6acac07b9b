"""Settings: one object, read from the environment (prefix MAILROOM_) when the process starts.

Nothing reads settings at import time; the CLI builds a Settings and hands it to whatever needs it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import string
import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Every key the service uses is derived from this one secret, so it must hold at least 256 random bits.
MIN_KEY_BYTES = 32
# 32 random bytes written as unpadded base64 take 43 characters, as hex 64.
MIN_KEY_CHARS = 43
MIN_HEX_KEY_CHARS = 64
# Random text of that length has dozens of different characters; a word repeated, a short pattern or
# a key padded with one letter does not.
MIN_DISTINCT_CHARS = 12
KEY_ADVICE = (
    "must hold at least 32 random bytes: 43 or more characters of base64 or 64 hex digits "
    "(for example the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
)


def check_secret_key(key: str) -> str:
    """The key when it can hold 32 random bytes and is not an obvious pattern; ValueError otherwise."""
    key = key.strip()
    hex_only = all(c in string.hexdigits for c in key)
    weak = (
        len(key.encode()) < MIN_KEY_BYTES
        or len(key) < (MIN_HEX_KEY_CHARS if hex_only else MIN_KEY_CHARS)
        or len(set(key)) < MIN_DISTINCT_CHARS
    )
    if weak:
        raise ValueError(KEY_ADVICE)
    return key


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILROOM_", extra="ignore")

    # A postgresql:// URL. Unset: an embedded PostgreSQL is started in data_dir/pgdata.
    database_url: str | None = None
    data_dir: Path = Path("var")
    # Used to encrypt stored provider tokens and to sign public links. Unset: generated once and kept
    # in data_dir/secret.key so restarts keep reading what was encrypted before.
    secret_key: str | None = Field(default=None, repr=False)
    public_url: str = "http://127.0.0.1:8000"
    # Bearer token GET /metrics asks for; unset: /metrics answers only to clients on loopback.
    metrics_token: str | None = Field(default=None, repr=False)
    # "text", or "json": every log line one JSON object.
    log_format: Literal["text", "json"] = "text"
    # A line for each request answered (api/access_log.py). Off where a proxy in front logs them already.
    access_log: bool = True
    # The From of mail whose user has not confirmed their address, and of the service's own mail
    # (address confirmations). Unset: no-reply@ the sending domain (see transports.registry).
    default_from: str | None = None

    # Request bodies (bytes), checked before they are read; a body must arrive within body_timeout seconds.
    max_body: int = 2 * 1024 * 1024
    # A CSV of 10,000 contacts of a generous width fits; anything larger is not a list to buffer.
    max_import_body: int = 16 * 1024 * 1024
    body_timeout: float = 30.0
    # Seconds an upload's body may take to arrive (26 MiB in 5 minutes is under 1 Mbit/s).
    upload_timeout: float = Field(default=300.0, gt=0)

    # Uploaded files: a folder under data_dir unless a bucket of an S3-compatible store is named.
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = Field(default=None, repr=False)
    s3_secret_access_key: str | None = Field(default=None, repr=False)

    # Sending (used by the worker).
    transport: str | None = Field(default=None, description="outbox | smtp | mailgun; default: inferred")
    smtp_url: str | None = None
    smtp_connections: int = 4
    mailgun_api_url: str = "https://api.mailgun.net"
    mailgun_api_key: str | None = None
    mailgun_domain: str | None = None
    # Mailgun's HTTP webhook signing key: POST /emails/events answers 404 without it.
    mailgun_webhook_signing_key: str | None = Field(default=None, repr=False)
    rate_limit: float | None = None
    # Our own open and click tracking (links through /t/c/, a pixel /t/o/) for transports without
    # their own, and Mailgun's tracking for Mailgun sends. MAILROOM_TRACKING=off turns both off.
    tracking: bool = True

    # Connected mailboxes (Gmail API, Microsoft Graph). The URLs default to the real services; the
    # OAuth redirect comes back to public_url + /users/self/{google,microsoft}/callback unless an
    # app's own front end receives it (*_redirect_url) and finishes with POST .../callback.
    google_client_id: str | None = None
    google_client_secret: str | None = None
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_api_url: str = "https://gmail.googleapis.com"
    microsoft_client_id: str | None = None
    microsoft_client_secret: str | None = None
    microsoft_auth_url: str = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
    microsoft_token_url: str = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    microsoft_graph_url: str = "https://graph.microsoft.com"
    google_redirect_url: str | None = None
    microsoft_redirect_url: str | None = None
    # The origin (scheme://host[:port]) of the app that opens the consent screen: mailroom's callback
    # page hands the provider's answer to that window only, never to any origin.
    app_origin: str | None = None
    # Attachment links are fetched by the server; private addresses stay off limits unless allowed.
    allow_private_attachment_links: bool = False
    # Seconds one attachment link may take to download in all (connect, headers and body together).
    attachment_fetch_timeout: float = Field(default=30.0, gt=0)
    # Recipients per send job (a slice): big enough to amortise a job, small enough to spread over workers.
    # Named for MAILROOM_BATCH_SIZE, the documented setting.
    batch_size: int = 500
    # User templates render in child processes (per API process and per worker), each capped in
    # memory; one request (a chunk of recipients, or one create-time check) may take
    # render_seconds plus render_seconds_per_message for each message it renders.
    render_processes: int = 2
    render_seconds: float = 2.0
    render_seconds_per_message: float = 0.05
    render_memory_mib: int = 512

    # Sending domains. DNS checks ask these servers (comma-separated IP or IP:port); unset: the system's.
    dns_servers: str | None = None
    # The domain set up at Mailgun for a user's address domain.
    mailgun_domain_pattern: str = "rechat-mail.{domain}"
    # Through SMTP: the SPF mechanism a domain must publish ("include:spf.example.net", "ip4:192.0.2.1");
    # unset: the relay's SPF is the operator's business and no SPF record is asked for.
    spf_include: str | None = None
    dkim_selector: str = "mailroom"
    # When set, a domain must point its tracking host (email.<domain>) here with a CNAME.
    tracking_host: str | None = None
    dmarc_value: str = "v=DMARC1; p=none"

    @field_validator("secret_key")
    @classmethod
    def _strong_secret_key(cls, value: str | None) -> str | None:
        return None if value is None else check_secret_key(value)

    @field_validator("mailgun_domain_pattern")
    @classmethod
    def _pattern_names_domain(cls, value: str) -> str:
        if "{domain}" not in value or value.replace("{domain}", "").count("{"):
            raise ValueError("must contain {domain} (and no other placeholder), e.g. rechat-mail.{domain}")
        return value

    @field_validator("google_redirect_url", "microsoft_redirect_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an absolute http(s) URL")
        return value or None

    @field_validator("app_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
            raise ValueError("must be an origin: scheme://host[:port], e.g. https://app.example.com")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("dns_servers")
    @classmethod
    def _dns_servers(cls, value: str | None) -> str | None:
        if value:
            dns_server_addresses(value)
        return value or None

    def resolved_secret_key(self) -> str:
        """The configured key, or the one generated for this data dir on first use.

        An API and a worker may start together on a fresh data dir: exactly one key must win. The key
        is written whole to a private temporary file and hard-linked into place, which fails when the
        file already exists, so every process ends up reading the same complete key.
        """
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if path.exists():
            return _read_key(path)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=".secret.key.")  # O_EXCL, mode 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(key + "\n")
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return _read_key(path)  # another process got there first: its key is the key
        finally:
            os.unlink(tmp)
        return key


def dns_server_addresses(value: str) -> list[tuple[str, int]]:
    """``"192.0.2.53, 192.0.2.54:5353, [2001:db8::53]:53"`` as (address, port) pairs; ValueError otherwise."""
    servers = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, port = item, "53"
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or "53"
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            address = str(ipaddress.ip_address(host))
            number = int(port)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or IP:port") from None
        if not 0 < number < 65536:
            raise ValueError(f"{item!r}: port out of range")
        servers.append((address, number))
    if not servers:
        raise ValueError("no DNS server given")
    return servers


def _read_key(path: Path) -> str:
    try:
        return check_secret_key(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} {exc}") from None
