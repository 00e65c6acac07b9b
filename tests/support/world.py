"""Arranging a test's world through the real service: brands, users, tokens, contacts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.crm import service
from mailroom.crm.models import Contact, User


@dataclass
class Actor:
    """A user acting in a brand: what a client holds after bootstrap."""

    brand: uuid.UUID
    user: uuid.UUID
    token: str
    client: httpx.AsyncClient

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Rechat-Brand": str(self.brand)}

    async def post(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, json=json, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.put(path, json=json, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.delete(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def data(self, response: httpx.Response) -> Any:
        assert response.status_code < 300, response.text
        return response.json()["data"]


@dataclass
class World:
    client: httpx.AsyncClient
    sessionmaker: async_sessionmaker[AsyncSession]
    _n: int = field(default=0)

    async def brand_admin(self, *, brand_name: str | None = None, first: str = "Ann", last: str = "Agent") -> Actor:
        """A new brand with a confirmed Admin and their token (what `mailroom bootstrap` makes)."""
        self._n += 1
        async with self.sessionmaker() as s, s.begin():
            brand, user, token = await service.bootstrap(
                s,
                brand_name=brand_name or f"Brand {self._n}",
                email=f"admin{self._n}-{uuid.uuid4().hex[:6]}@example.com",
                first_name=first,
                last_name=last,
            )
        return Actor(brand=brand.id, user=user.id, token=token, client=self.client)

    async def member(
        self, admin: Actor, *, role: str = "Agent", email: str | None = None, confirmed: bool = True
    ) -> Actor:
        """Another user of admin's brand, added through the API, with a token of their own; by default
        they have confirmed their address (as if they had followed the link mailed to them)."""
        self._n += 1
        email = email or f"member{self._n}-{uuid.uuid4().hex[:6]}@example.com"
        user = admin.data(await admin.post(f"/brands/{admin.brand}/users", {"email": email, "role": role}))
        if confirmed:
            await self.confirm(email)
        async with self.sessionmaker() as s, s.begin():
            token = await service.create_token(s, user=uuid.UUID(user["id"]))
        return Actor(brand=admin.brand, user=uuid.UUID(user["id"]), token=token, client=self.client)

    async def confirm(self, *emails: str) -> None:
        """Mark users' addresses confirmed, as following the mailed link does (that link has its own tests)."""
        async with self.sessionmaker() as s, s.begin():
            await s.execute(
                update(User).where(func.lower(User.email).in_([e.lower() for e in emails])).values(email_confirmed=True)
            )

    async def contacts(self, actor: Actor, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Contacts created in actor's brand through the bulk endpoint, in the order given."""
        response = await actor.post(f"/brands/{actor.brand}/contacts", {"contacts": items})
        created: list[dict[str, Any]] = actor.data(response)
        return created

    async def contact(self, actor: Actor, *emails: str, **fields: Any) -> dict[str, Any]:
        """One contact; with no address given it gets a fresh one."""
        self._n += 1
        addresses = list(emails) or [f"contact{self._n}-{uuid.uuid4().hex[:6]}@example.com"]
        return (await self.contacts(actor, [{"emails": addresses, **fields}]))[0]

    async def delete_contact(self, contact: dict[str, Any]) -> None:
        """Soft-deletes a contact directly (the API has no endpoint for it), as a CRM sync would."""
        async with self.sessionmaker() as s, s.begin():
            await s.execute(
                update(Contact).where(Contact.id == uuid.UUID(str(contact["id"]))).values(deleted_at=func.now())
            )

    async def crm_list(self, actor: Actor, name: str | None = None, members: Sequence[Any] = ()) -> dict[str, Any]:
        """A list in actor's brand; members are contact objects or ids."""
        self._n += 1
        ids = [str(m["id"]) if isinstance(m, dict) else str(m) for m in members]
        body = {"name": name or f"List {self._n}", "members": ids}
        created: dict[str, Any] = actor.data(await actor.post(f"/brands/{actor.brand}/lists", body))
        return created

    async def agent(self, actor: Actor, *, email: str | None = None, **fields: Any) -> dict[str, Any]:
        """An agent of the MLS network (shared by every brand)."""
        self._n += 1
        body = {"email": email or f"agent{self._n}-{uuid.uuid4().hex[:6]}@mls.example.com", **fields}
        created: dict[str, Any] = actor.data(await actor.post("/agents", body))
        return created

    async def google_credential(
        self,
        actor: Actor,
        *,
        scopes: Sequence[str] = ("profile", "mail.read", "mail.send", "mail.modify"),
        revoked: bool = False,
        deleted: bool = False,
        **fields: Any,
    ) -> str:
        """The id of a new Google credential of actor in actor's brand; revoked or deleted when asked."""
        return await self._credential(actor, "google", scopes, revoked=revoked, deleted=deleted, **fields)

    async def microsoft_credential(
        self,
        actor: Actor,
        *,
        scopes: Sequence[str] = ("profile", "mail.read", "mail.send", "mail.modify"),
        revoked: bool = False,
        deleted: bool = False,
        **fields: Any,
    ) -> str:
        """The id of a new Microsoft credential of actor in actor's brand; revoked or deleted when asked."""
        return await self._credential(actor, "microsoft", scopes, revoked=revoked, deleted=deleted, **fields)

    async def _credential(
        self, actor: Actor, kind: str, scopes: Sequence[str], *, revoked: bool, deleted: bool, **fields: Any
    ) -> str:
        self._n += 1
        body = {
            "email": f"mailbox{self._n}-{uuid.uuid4().hex[:6]}@example.com",
            "scope_summary": list(scopes),
            "access_token": f"access-{uuid.uuid4().hex}",
            "refresh_token": f"refresh-{uuid.uuid4().hex}",
            "expires_at": 4102444800,
            **fields,
        }
        base = f"/users/self/{kind}-credentials"
        credential_id: str = actor.data(await actor.post(base, body))["id"]
        if revoked:
            actor.data(await actor.post(f"{base}/{credential_id}/revoke"))
        if deleted:
            response = await actor.delete(f"{base}/{credential_id}")
            assert response.status_code == 204, response.text
        return credential_id
