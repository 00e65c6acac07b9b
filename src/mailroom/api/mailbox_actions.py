"""Actions on the messages of a connected Gmail or Outlook mailbox: mark read or unread, trash, archive.

Each route checks the request and queues the action; it answers 202 with no body, and the worker
applies it through the provider's API moments later. Google and Microsoft share one implementation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Response

from mailroom.api.auth import CurrentCaller
from mailroom.api.deps import Session
from mailroom.api.errors import ERROR_SCHEMA
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crm import mailbox_actions
from mailroom.crm.credentials import Kind
from mailroom.crm.mailbox_actions import MAX_MESSAGE_ID, MAX_MESSAGE_IDS, MESSAGE_ID_PATTERNS
from mailroom.mailboxes.jobs import NAMES

router = APIRouter(tags=["mailbox actions"], route_class=StrictQueryRoute)

# Checked by the service (after the credential), so the body is taken as any JSON here.
ActionBody = Annotated[Any, Body()]


def _message_path(kind: Kind) -> Any:
    # Outlook ids may hold "/" (sent as %2F): the message id is the rest of the path. The pattern is the
    # document's only: the service checks the id and words the refusal as it does for the body's ids.
    return Path(min_length=1, max_length=MAX_MESSAGE_ID, json_schema_extra={"pattern": MESSAGE_ID_PATTERNS[kind]})


def _ids_schema(kind: Kind) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_MESSAGE_ID, "pattern": MESSAGE_ID_PATTERNS[kind]},
        "minItems": 1,
        "maxItems": MAX_MESSAGE_IDS,
        "description": "The provider's message ids",
    }


_STATUS_SCHEMA: dict[str, Any] = {"type": "boolean", "description": "true: mark read; false: mark unread"}


def _body(properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "required": list(properties), "properties": properties}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_ERROR = {"application/json": {"schema": ERROR_SCHEMA}}
_QUEUED: dict[int | str, dict[str, Any]] = {
    202: {"description": "Queued; the mailbox changes moments later"},
    403: {"description": "The account did not grant mail.modify", "content": _ERROR},
    404: {"description": "The caller has no such account", "content": _ERROR},
}


def _action_routes(kind: Kind) -> None:
    mailbox = NAMES[kind]
    base = f"/emails/{kind}/{{credential_id}}"

    @router.put(
        f"{base}/messages/{{message_id:path}}",
        name=f"{kind}_mark_message",
        status_code=202,
        response_class=Response,
        responses=_QUEUED,
        summary=f"Mark one message of a connected {mailbox} mailbox read or unread",
        openapi_extra=_body({"status": _STATUS_SCHEMA}),
    )
    async def mark_message(
        credential_id: str,
        caller: CurrentCaller,
        session: Session,
        # A default rather than an annotation: the pattern is the kind's, and annotations are read at module level.
        message_id: str = _message_path(kind),
        body: ActionBody = None,
    ) -> Response:
        await mailbox_actions.mark_read(
            session, kind=kind, user=caller.user.id, credential_id=credential_id, body=body, message_id=message_id
        )
        return Response(status_code=202)

    @router.put(
        f"{base}/messages",
        name=f"{kind}_mark_messages",
        status_code=202,
        response_class=Response,
        responses=_QUEUED,
        summary=f"Mark messages of a connected {mailbox} mailbox read or unread",
        openapi_extra=_body({"status": _STATUS_SCHEMA, "messageIds": _ids_schema(kind)}),
    )
    async def mark_messages(
        credential_id: str,
        caller: CurrentCaller,
        session: Session,
        body: ActionBody = None,
    ) -> Response:
        await mailbox_actions.mark_read(session, kind=kind, user=caller.user.id, credential_id=credential_id, body=body)
        return Response(status_code=202)

    _move_route(kind, base, "trash", f"Move messages of a connected {mailbox} mailbox to its trash")
    _move_route(kind, base, "archive", f"Archive messages of a connected {mailbox} mailbox (out of the inbox, kept)")


def _move_route(kind: Kind, base: str, action: Literal["trash", "archive"], summary: str) -> None:
    @router.post(
        f"{base}/{action}",
        name=f"{kind}_{action}_messages",
        status_code=202,
        response_class=Response,
        responses=_QUEUED,
        summary=summary,
        openapi_extra=_body({"messageIds": _ids_schema(kind)}),
    )
    async def move_messages(
        credential_id: str,
        caller: CurrentCaller,
        session: Session,
        body: ActionBody = None,
    ) -> Response:
        await mailbox_actions.move(
            session, kind=kind, user=caller.user.id, credential_id=credential_id, body=body, action=action
        )
        return Response(status_code=202)


_action_routes("google")
_action_routes("microsoft")
