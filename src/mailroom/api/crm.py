"""CRM endpoints: brands and their users, contacts, lists, MLS agents and mailbox credentials."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Path, Query, Request, Response, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from mailroom.api.auth import BRAND_HEADER, CurrentCaller, brand_from_request
from mailroom.api.deps import AppSettings, Secrets, Session
from mailroom.api.envelope import Ok, OkList, ORJSONResponse, ok, ok_list
from mailroom.api.paging import Limit, Start
from mailroom.api.strict_query import StrictQueryRoute
from mailroom.crm import contacts, credentials, invitations, lists, service, tokens
from mailroom.crm.membership import require_admin, require_member
from mailroom.crm.notices import queue_confirmation, read_confirmation
from mailroom.crm.schemas import (
    AgentIn,
    AgentOut,
    BrandIn,
    BrandOut,
    ContactOut,
    ContactsIn,
    CredentialIn,
    CredentialOut,
    CrmListOut,
    InvitationIn,
    InvitationOut,
    ListIn,
    MembershipOut,
    MembersIn,
    NewTokenOut,
    TokenIn,
    TokenOut,
    UserIn,
    UserOut,
    agent_out,
    brand_out,
    contact_out,
    credential_out,
    list_out,
    new_token_out,
    token_out,
    user_out,
)
from mailroom.crypto import InvalidToken
from mailroom.errors import BadRequest, Conflict, PayloadTooLarge
from mailroom.validation import PlainText

router = APIRouter(tags=["crm"], route_class=StrictQueryRoute)

CSV_TYPES = ("text/csv", "application/csv", "text/plain")


async def _path_brand_member(brand: uuid.UUID, caller: CurrentCaller, session: Session) -> uuid.UUID:
    """The brand in the path, once the caller is known to be one of its members (else 403)."""
    await require_member(session, caller.user.id, brand)
    return brand


MemberBrand = Annotated[uuid.UUID, Depends(_path_brand_member)]


@router.post(
    "/brands",
    response_model=Ok[BrandOut],
    summary="Create a brand (a child brand with `parent`); the caller becomes its Admin",
)
async def create_brand(body: BrandIn, caller: CurrentCaller, session: Session) -> ORJSONResponse:
    if body.parent is not None:
        await require_admin(session, caller.user.id, body.parent)
    brand = await service.create_brand(session, name=body.name, parent=body.parent)
    await service.set_membership(session, brand=brand.id, user=caller.user.id, role="Admin")
    return ok(brand_out(brand))


@router.post(
    "/brands/{brand}/users",
    response_model=Ok[UserOut],
    summary="Create a user in the brand, or change a member's role",
    description="A new user's address is unconfirmed until they open the link mailed to it; until then their "
    "campaigns go out From the service's address with theirs as Reply-To. An address that already has an account "
    "elsewhere is mailed an invitation to join instead, which its owner accepts with their own token; the answer "
    "is the same as for a new address, so it tells nothing of other brands' users.",
)
async def add_user(brand: uuid.UUID, body: UserIn, caller: CurrentCaller, session: Session) -> ORJSONResponse:
    await require_admin(session, caller.user.id, brand)
    profile = body.model_dump(exclude={"email", "role"}, exclude_none=True)
    user = await service.add_user_to_brand(
        session, brand=brand, email=body.email, role=body.role, profile=profile, inviter=caller.user.id
    )
    return ok(user_out(user, role=body.role))


# Sealed tokens are about 100-300 characters; the bound keeps junk paths cheap to refuse.
TokenPath = Annotated[str, Path(min_length=16, max_length=1024)]


@router.post(
    "/brands/{brand}/invitations",
    response_model=Ok[InvitationOut],
    summary="Invite an existing user (by address) to the brand; they join by accepting",
    description="Answers a signed invitation token that expires in 7 days. Give it to the invited person; "
    "they accept it with `POST /invitations/{token}/accept` using their own API token. The answer is the same "
    "whether or not the address has an account.",
)
async def create_invitation(
    brand: uuid.UUID, body: InvitationIn, caller: CurrentCaller, session: Session, box: Secrets
) -> ORJSONResponse:
    await require_admin(session, caller.user.id, brand)
    return ok(invitations.invite(box, brand=brand, email=body.email, role=body.role, inviter=caller.user.id))


@router.post(
    "/invitations/{token}/accept",
    response_model=Ok[MembershipOut],
    summary="Join the brand an invitation to your address names",
)
async def accept_invitation(token: TokenPath, caller: CurrentCaller, session: Session, box: Secrets) -> ORJSONResponse:
    return ok(await invitations.accept(session, box, token, caller.user))


@router.post(
    "/users/self/email-confirmation",
    status_code=202,
    response_class=Response,
    summary="Mail the caller a new link that confirms their address",
)
async def resend_confirmation(caller: CurrentCaller, session: Session) -> Response:
    if caller.user.email_confirmed:
        raise Conflict("is confirmed already", field="email")
    await queue_confirmation(session, caller.user.id)
    return Response(status_code=202)


_CONFIRM_PAGE = (
    "<!doctype html><title>Confirm your address</title><form method=post>"
    "<p>Confirm that this email address is yours?</p><button type=submit>Confirm</button></form>"
)


@router.get(
    "/users/confirm/{token}", summary="The page an address-confirmation link opens", response_class=HTMLResponse
)
async def confirmation_page(token: TokenPath, box: Secrets) -> HTMLResponse:
    try:
        read_confirmation(box, token)
    except (InvalidToken, KeyError, ValueError):
        return HTMLResponse("<!doctype html><title>Link expired</title><p>This link is not valid.</p>", 404)
    # A GET only shows the page (mail scanners follow links); the button confirms.
    return HTMLResponse(_CONFIRM_PAGE)


@router.post(
    "/users/confirm/{token}", summary="Confirm the address the link was mailed to", response_class=HTMLResponse
)
async def confirm_address(token: TokenPath, session: Session, box: Secrets) -> HTMLResponse:
    await invitations.confirm_address(session, box, token)
    return HTMLResponse("<!doctype html><title>Confirmed</title><p>Your email address is confirmed.</p>")


@router.post(
    "/brands/{brand}/contacts", response_model=Ok[list[ContactOut]], summary="Create up to 10,000 contacts in one call"
)
async def create_contacts(body: ContactsIn, brand: MemberBrand, session: Session) -> ORJSONResponse:
    rows = await contacts.create_contacts(session, brand=brand, items=body.contacts)
    return ok([contact_out(row) for row in rows])


_CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": "email,first_name,last_name,tags\nann@example.com,Ann,Lee,Buyer;VIP\n",
            }
        }
    }
}


def _file_required(schema: dict[str, Any]) -> None:
    schema["required"] = ["file"]
    schema["properties"]["file"] = {"type": "string", "format": "binary", "description": "The CSV file"}


# `file` is optional to the model only so that a text/csv body can stand in for the form; a form without it
# is refused (_csv_text), which is what the document says.
class CsvUpload(BaseModel):
    """A multipart body of an import: the CSV as the form field `file`."""

    model_config = ConfigDict(json_schema_extra=_file_required)

    file: UploadFile | None = Field(default=None, description="The CSV file")


@router.post(
    "/brands/{brand}/contacts/import",
    response_model=Ok[list[ContactOut]],
    summary="Create contacts from a CSV file (multipart field `file`, or a text/csv body)",
    description="Header row naming the columns: `email` (required; several separated by `;`), `first_name`, "
    "`last_name`, `tags` (separated by `;`), `partner_email`. At most 10,000 rows; a bad row is named by its "
    "number as a spreadsheet shows it (the header is row 1) and nothing is created.",
    openapi_extra=_CSV_BODY,
)
async def import_contacts(
    brand: MemberBrand,
    request: Request,
    session: Session,
    settings: AppSettings,
    form: Annotated[CsvUpload, File()],
) -> ORJSONResponse:
    items = contacts.parse_csv(await _csv_text(request, form.file, settings.max_import_body))
    rows = await contacts.create_contacts(session, brand=brand, items=items)
    return ok([contact_out(row) for row in rows])


async def _csv_text(request: Request, file: UploadFile | None, limit: int) -> str:
    """The uploaded file or the raw body, decoded; bounded so a huge upload is refused, not buffered."""
    data = bytearray()
    if file is not None:
        field = "file"
        data += await file.read(limit + 1)
    else:
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            raise BadRequest("is required: upload the CSV as the form field 'file'", field="file")
        if content_type not in CSV_TYPES:
            raise BadRequest("must be text/csv, or multipart/form-data with a 'file' field", field="Content-Type")
        field = "body"
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                break
    if len(data) > limit:
        raise PayloadTooLarge(f"must be at most {limit} bytes", field=field)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("must be UTF-8 text", field=field) from None


@router.get(
    "/brands/{brand}/contacts",
    response_model=OkList[ContactOut],
    summary="The brand's contacts, newest first; `tag` filters (any case)",
)
async def get_contacts(
    brand: MemberBrand,
    session: Session,
    start: Start = 0,
    limit: Limit = 100,
    tag: Annotated[PlainText | None, Query(min_length=1, max_length=200)] = None,
) -> ORJSONResponse:
    rows, total = await contacts.list_contacts(session, brand=brand, start=start, limit=limit, tag=tag)
    return ok_list([contact_out(row) for row in rows], total=total)


@router.post("/brands/{brand}/lists", response_model=Ok[CrmListOut], summary="Create a list of the brand's contacts")
async def create_list(body: ListIn, brand: MemberBrand, session: Session) -> ORJSONResponse:
    row = await lists.create_list(session, brand=brand, name=body.name, members=body.members)
    return ok(list_out(row))


@router.post(
    "/brands/{brand}/lists/{list}/members",
    response_model=Ok[CrmListOut],
    summary="Add contacts to a list (re-adding one is harmless)",
)
async def add_list_members(
    body: MembersIn, brand: MemberBrand, list_id: Annotated[uuid.UUID, Path(alias="list")], session: Session
) -> ORJSONResponse:
    row = await lists.add_members(session, brand=brand, list_id=list_id, members=body.members)
    return ok(list_out(row))


@router.post(
    "/agents", response_model=Ok[AgentOut], summary="Add an agent to the MLS agent network (shared by every brand)"
)
async def create_agent(body: AgentIn, caller: CurrentCaller, session: Session) -> ORJSONResponse:
    agent = await service.create_agent(session, email=body.email, full_name=body.full_name, mls_id=body.mls_id)
    return ok(agent_out(agent))


def _credential_routes(kind: credentials.Kind) -> None:
    """The same four endpoints for Google and Microsoft; only the table and the type differ."""
    base = f"/users/self/{kind}-credentials"
    label = kind.capitalize()

    @router.post(
        base,
        name=f"create_{kind}_credential",
        response_model=Ok[CredentialOut],
        summary=f"Connect a {label} mailbox for the calling user (brand from X-Rechat-Brand)",
        description="The tokens are stored encrypted and are never answered.",
    )
    async def create(
        body: CredentialIn, request: Request, caller: CurrentCaller, session: Session, box: Secrets
    ) -> ORJSONResponse:
        brand = brand_from_request(request, None)
        await require_member(session, caller.user.id, brand, field=BRAND_HEADER)
        refresh = body.refresh_token.get_secret_value() if body.refresh_token else None
        credential = await credentials.create_credential(
            session,
            box,
            kind=kind,
            user=caller.user.id,
            brand=brand,
            email=body.email,
            scope_summary=list(body.scope_summary),
            access_token=body.access_token.get_secret_value(),
            refresh_token=refresh,
            expires_at=body.expires_at,
        )
        return ok(credential_out(credential, kind=kind))

    @router.post(
        base + "/{credential}/revoke",
        name=f"revoke_{kind}_credential",
        response_model=Ok[CredentialOut],
        summary=f"Mark one of the caller's {label} credentials revoked; campaigns no longer accept it",
    )
    async def revoke(credential: uuid.UUID, caller: CurrentCaller, session: Session) -> ORJSONResponse:
        revoked = await credentials.revoke_credential(session, kind=kind, user=caller.user.id, credential_id=credential)
        return ok(credential_out(revoked, kind=kind))

    @router.delete(
        base + "/{credential}",
        name=f"delete_{kind}_credential",
        summary=f"Delete one of the caller's {label} credentials",
        status_code=204,
        response_class=Response,
    )
    async def delete(credential: uuid.UUID, caller: CurrentCaller, session: Session) -> Response:
        await credentials.delete_credential(session, kind=kind, user=caller.user.id, credential_id=credential)
        return Response(status_code=204)


_credential_routes("google")
_credential_routes("microsoft")


@router.get(
    "/users/self/tokens",
    response_model=OkList[TokenOut],
    summary="The caller's API tokens (never the tokens themselves), newest first",
)
async def get_tokens(caller: CurrentCaller, session: Session) -> ORJSONResponse:
    rows = await tokens.list_tokens(session, user=caller.user.id)
    return ok_list([token_out(row) for row in rows], total=len(rows))


@router.post(
    "/users/self/tokens",
    response_model=Ok[NewTokenOut],
    summary="Create an API token for the caller; the answer is the only time the token is shown",
    description="`expires_in_days` or `expires_at` (not both) ends it; without either it works until revoked. "
    "It never outlives the token that creates it: asked for later (or for no expiry), it expires with that token.",
)
async def create_token(body: TokenIn, caller: CurrentCaller, session: Session) -> ORJSONResponse:
    expires_at = tokens.no_later_than(body.expiry(), caller.token_expires_at)
    row, token = await tokens.issue_token(session, user=caller.user.id, name=body.name, expires_at=expires_at)
    return ok(new_token_out(row, token))


@router.delete(
    "/users/self/tokens/{id}",
    summary="Revoke one of the caller's API tokens (it stops working at once)",
    status_code=204,
    response_class=Response,
)
async def revoke_token(
    request: Request, token_id: Annotated[uuid.UUID, Path(alias="id")], caller: CurrentCaller, session: Session
) -> Response:
    await tokens.revoke_token(session, token_id=token_id, user=caller.user.id)
    # At once here; other processes stop trusting it within tokens.HOLDER_TTL.
    request.app.state.token_check.forget(token_id)
    return Response(status_code=204)
