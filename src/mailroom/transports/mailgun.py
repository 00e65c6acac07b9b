"""Mailgun over its HTTP API (``POST /v3/{domain}/messages[.mime]``, basic auth ``api:KEY``).

Two ways to send:

* ``send_many``: messages already rendered per recipient go one by one to
  ``messages.mime`` (form field ``to`` per RCPT address + the file ``message``), several
  requests in flight at once (``concurrency``, shared by all calls).
* ``send_template``: one request for up to 1,000 recipients using Mailgun batch
  sending: ``to`` once per recipient and ``recipient-variables`` (JSON, keyed by
  address), with ``%recipient.name%`` placeholders in subject/html/text. Mailgun expands
  it into one message per recipient; every recipient gets the id of that one request.
  The caller decides whether a campaign can take this path (no per-recipient Jinja logic).

Errors: HTTP 429, 5xx, timeouts and connection errors are transient (``Retry-After`` is
passed on); 401/403 (API key) and 404 (unknown domain) fail the call permanently; any
other 4xx is a permanent error for the messages of that request. Once a request is rate
limited or refused as a whole, the rest of the call is not attempted.
Provider ids are Mailgun's message ids without angle brackets, as its events report them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote, unquote

import httpx

from mailroom.transports.base import (
    Capabilities,
    MessageContent,
    OutgoingMessage,
    PermanentSendError,
    RouteOptions,
    SendError,
    SendResult,
    TransientSendError,
    settle,
)
from mailroom.transports.mime import Attachment, one_line, parse_address
from mailroom.transports.responses import json_object, retry_after

MAX_TEMPLATE_RECIPIENTS = 1000
MAX_TAGS = 3
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_PLACEHOLDER = re.compile(r"%recipient\.([^%\s]+)%")

_Files = list[tuple[str, tuple[str, bytes, str]]]


@dataclass(frozen=True, slots=True)
class MailgunOptions(RouteOptions):
    """What a message sent through Mailgun carries besides itself."""

    # The domain set up at Mailgun for the From's domain, to send through instead of the transport's own.
    domain: str | None = None


def _domain(message: OutgoingMessage) -> str | None:
    return message.options.domain if isinstance(message.options, MailgunOptions) else None


@dataclass(frozen=True, slots=True)
class TemplateRecipient:
    key: str  # the email_campaign_email id this recipient's result belongs to
    address: str  # "Name <addr>" or "addr"
    variables: Mapping[str, Any] = field(default_factory=dict)  # %recipient.<name>% values


@dataclass(frozen=True, slots=True)
class TemplateSend:
    """One Mailgun batch send. Mailgun documents at most 3 ``tags`` per message."""

    from_addr: str
    subject: str
    html: str | None
    text: str | None
    recipients: Sequence[TemplateRecipient]
    headers: Mapping[str, str] = field(default_factory=dict)
    tags: Sequence[str] = ()
    variables: Mapping[str, str] = field(default_factory=dict)
    inline: Sequence[Attachment] = ()
    attachments: Sequence[Attachment] = ()
    # Mailgun's own open and click tracking (reported through its webhooks).
    tracking: bool = False
    # Sent through this Mailgun domain rather than the transport's own (a user's verified domain).
    domain: str | None = None


# Names, in recipient-variables, of the per-recipient headers a reader of Mailgun's webhooks looks for.
_HEADER_VARIABLES = {"list-unsubscribe": "unsubscribe"}
_UNSUBSCRIBE = "%recipient.unsubscribe%"


def batch_of(messages: Sequence[OutgoingMessage]) -> TemplateSend:
    """Messages of one campaign to one recipient each, given as fields, as one Mailgun batch send.

    What is the same for everyone is sent once; what differs (a personalised subject or body, the
    unsubscribe link) travels as recipient-variables and is substituted by Mailgun per recipient. The
    campaign's own templates stay ours: Mailgun only sees finished text, never template logic.
    """
    contents = [m.content for m in messages]
    if not all(contents):
        raise ValueError("a batch send needs every message as fields")
    first = cast(MessageContent, contents[0])
    each = cast(list[MessageContent], contents)
    if any(
        c.from_addr != first.from_addr or len(m.recipients) != 1 or _domain(m) != _domain(messages[0])
        for c, m in zip(each, messages, strict=True)
    ):
        raise ValueError("a batch send is one sender's mail to one recipient per message")
    variables: list[dict[str, str]] = [{} for _ in messages]
    fields: dict[str, str | None] = {}
    # Each recipient's unsubscribe link, which their List-Unsubscribe carries (and their footer repeats).
    links = [c.headers.get("List-Unsubscribe", "").strip("<>") for c in each]
    for name in ("subject", "html", "text"):
        values = [getattr(c, name) for c in each]
        # Bodies that differ only by the recipient's own link go once, the link as its variable.
        linked = [v.replace(link, _UNSUBSCRIBE) if v and link else v for v, link in zip(values, links, strict=True)]
        if len(set(values)) == 1:
            fields[name] = values[0]
        elif all(links) and len(set(linked)) == 1:
            fields[name] = linked[0]
            for per_recipient, link in zip(variables, links, strict=True):
                per_recipient["unsubscribe"] = link
        else:
            fields[name] = f"%recipient.{name}%"
            for per_recipient, value in zip(variables, values, strict=True):
                per_recipient[name] = value or ""
    headers: dict[str, str] = {}
    for number, name in enumerate(first.headers):
        values = [c.headers.get(name, "") for c in each]
        if len(set(values)) == 1:
            headers[name] = values[0]
            continue
        variable = _HEADER_VARIABLES.get(name.lower(), f"header{number}")
        # Brackets common to every value (<url>) stay in the header, so the variable is the bare value.
        bracketed = all(v.startswith("<") and v.endswith(">") for v in values)
        headers[name] = f"<%recipient.{variable}%>" if bracketed else f"%recipient.{variable}%"
        for per_recipient, value in zip(variables, values, strict=True):
            per_recipient[variable] = value[1:-1] if bracketed else value
    return TemplateSend(
        from_addr=first.from_addr,
        subject=fields["subject"] or "",
        html=fields["html"],
        text=fields["text"],
        recipients=[
            TemplateRecipient(key=m.key, address=m.recipients[0], variables=values)
            for m, values in zip(messages, variables, strict=True)
        ],
        headers=headers,
        tags=messages[0].tags,
        inline=first.inline,
        attachments=first.attachments,
        tracking=messages[0].tracking,
        domain=_domain(messages[0]),
    )


class MailgunTransport:
    """See the module docstring and ``mailroom.transports.base`` for the contract."""

    name = "mailgun"
    capabilities = Capabilities(
        # Mailgun takes up to 1,000 recipients in one batch-sending call.
        max_recipients_per_call=MAX_TEMPLATE_RECIPIENTS,
        builds_from_fields=True,
        # Opens and clicks are tracked by Mailgun (OutgoingMessage.tracking) and reported by its webhooks.
        tracks_itself=True,
        # Mail From a user's domain goes through the domain set up at Mailgun for it (MailgunOptions).
        verifies_domains=True,
    )

    def __init__(
        self,
        api_url: str,
        api_key: str,
        domain: str,
        client: httpx.AsyncClient | None = None,
        *,
        concurrency: int = 8,
        timeout: float = 30.0,
    ) -> None:
        base = api_url.rstrip("/")
        self._base = base.removesuffix("/v3")
        self.domain = domain
        self._messages_url = self._url(domain)
        self._auth = httpx.BasicAuth("api", api_key)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._slots = asyncio.Semaphore(concurrency)

    def __repr__(self) -> str:  # never show the key
        return f"MailgunTransport({self._messages_url!r})"

    def _url(self, domain: str | None) -> str:
        return f"{self._base}/v3/{quote(domain or self.domain, safe='')}/messages"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Messages given as fields only go out in batch sends (see ``batch_of``); the others as MIME."""
        if messages and all(m.message is None for m in messages):
            results: list[SendResult] = []
            for start in range(0, len(messages), MAX_TEMPLATE_RECIPIENTS):
                results += await self.send_template(batch_of(messages[start : start + MAX_TEMPLATE_RECIPIENTS]))
            return results
        abort: list[SendError] = []

        async def one(msg: OutgoingMessage) -> SendResult | SendError:
            data: dict[str, str | list[str]] = {
                "to": list(msg.recipients),
                **_options(msg.tags, msg.variables, tracking=msg.tracking),
            }
            # Joined per request while it is in flight (at most ``concurrency`` at once).
            files: _Files = [("message", ("message.mime", msg.joined(), "message/rfc822"))]
            outcome = await self._post(f"{self._url(_domain(msg))}.mime", data, files, abort)
            if isinstance(outcome, SendError):
                return outcome
            provider_id, error = outcome
            return SendResult(msg.key, provider_id, error, error is not None)

        outcomes = await asyncio.gather(*(one(m) for m in messages))
        return settle(messages, outcomes)

    async def send_template(self, batch: TemplateSend) -> list[SendResult]:
        """One API call for all of ``batch.recipients``; one result per recipient, in order."""
        if not 0 < len(batch.recipients) <= MAX_TEMPLATE_RECIPIENTS:
            raise ValueError(f"a Mailgun batch holds 1 to {MAX_TEMPLATE_RECIPIENTS} recipients")
        # Mailgun writes the subject and h: fields as header lines, with recipient variables
        # substituted: a line break in any of them would add a header (a Bcc) of the sender's choosing.
        headers = {name: one_line(value) for name, value in batch.headers.items()}
        in_headers = set(_PLACEHOLDER.findall(batch.subject)).union(*map(_PLACEHOLDER.findall, headers.values()))
        variables: dict[str, Mapping[str, Any]] = {}
        seen: set[str] = set()
        for recipient in batch.recipients:
            address = parse_address(recipient.address)[1]
            if address.lower() in seen:
                raise ValueError(f"{address} appears twice in one Mailgun batch")
            seen.add(address.lower())
            variables[address] = {
                name: one_line(value) if name in in_headers and isinstance(value, str) else value
                for name, value in recipient.variables.items()
            }
        data: dict[str, str | list[str]] = {
            "from": _form_address(batch.from_addr),
            "to": [_form_address(r.address) for r in batch.recipients],
            "subject": one_line(batch.subject),
            "recipient-variables": json.dumps(variables, ensure_ascii=False, default=str),
        }
        if batch.text is not None:
            data["text"] = batch.text
        if batch.html is not None:
            data["html"] = batch.html
        data.update(_options(batch.tags, batch.variables, tracking=batch.tracking))
        for name, value in headers.items():
            data[f"h:{name}"] = value
        files: _Files = [("attachment", (a.filename, a.data, a.content_type)) for a in batch.attachments]
        files += [("inline", (a.content_id or a.filename, a.data, a.content_type)) for a in batch.inline]
        outcome = await self._post(self._url(batch.domain), data, files, [])
        if isinstance(outcome, SendError):
            raise outcome
        provider_id, error = outcome
        return [SendResult(r.key, provider_id, error, error is not None) for r in batch.recipients]

    async def _post(
        self, url: str, data: dict[str, str | list[str]], files: _Files, abort: list[SendError]
    ) -> tuple[str | None, str | None] | SendError:
        """(provider id, None) when queued, (None, reason) for a refused message, or a call-wide error."""
        async with self._slots:
            if abort:  # an earlier request of this call was rate limited or refused as a whole
                return abort[0]
            try:
                response = await self._client.post(url, files=_multipart(data, files), auth=self._auth)
            except httpx.TimeoutException as exc:
                return TransientSendError(f"Mailgun did not answer in time ({type(exc).__name__})")
            except httpx.TransportError as exc:
                return TransientSendError(f"cannot reach Mailgun: {exc}")
        status = response.status_code
        if status == 200:
            body = json_object(response)
            provider_id = str(body.get("id") or "").strip().strip("<>")
            return (provider_id or None, None if provider_id else "Mailgun queued the message without an id")
        reason = f"Mailgun answered {status}: {_error_message(response)}"
        error: SendError | None = None
        if status == 429 or status >= 500:
            error = TransientSendError(reason, retry_after=retry_after(response))
        elif status in (401, 403):
            error = PermanentSendError(f"Mailgun refused the API key ({status})")
        elif status == 404:
            domain = url.rsplit("/", 2)[-2]
            error = PermanentSendError(f"Mailgun does not know the sending domain {unquote(domain)} ({status})")
        if error is not None:
            abort.append(error)
            return error
        return None, reason


def _multipart(data: dict[str, str | list[str]], files: _Files) -> list[tuple[str, Any]]:
    """Always multipart/form-data, as Mailgun documents its API (a field without a filename is a value)."""
    fields: list[tuple[str, Any]] = []
    for name, value in data.items():
        for item in [value] if isinstance(value, str) else value:
            fields.append((name, (None, item.encode())))
    return fields + list(files)


def _form_address(entry: str) -> str:
    # Mailgun splits `to` at commas, so a name such as "Lee, Ann" must be quoted.
    name, address = parse_address(entry)
    if not name:
        return address
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _options(tags: Sequence[str], variables: Mapping[str, str], *, tracking: bool) -> dict[str, str | list[str]]:
    data: dict[str, str | list[str]] = {f"v:{name}": value for name, value in variables.items()}
    if tracking:
        # Opens through Mailgun's pixel, clicks through its redirect in the html part only: links in
        # the plain text stay the sender's own.
        data.update({"o:tracking": "yes", "o:tracking-opens": "yes", "o:tracking-clicks": "htmlonly"})
    if tags:
        # Mailgun keeps at most three tags per message; ours come most important first
        # (brand, campaign, then the campaign's own).
        data["o:tag"] = list(tags)[:MAX_TAGS]
    return data


def _error_message(response: httpx.Response) -> str:
    message = json_object(response).get("message")
    return str(message) if message else response.text.strip()[:200] or response.reason_phrase
