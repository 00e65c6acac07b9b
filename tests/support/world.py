"""Arranging a test's world through the real service: brands, users, tokens, contacts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailroom.crm import service


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

    async def member(self, admin: Actor, *, role: str = "Agent", email: str | None = None) -> Actor:
        """Another user of admin's brand, added through the API, with a token of their own."""
        self._n += 1
        email = email or f"member{self._n}-{uuid.uuid4().hex[:6]}@example.com"
        user = admin.data(await admin.post(f"/brands/{admin.brand}/users", {"email": email, "role": role}))
        async with self.sessionmaker() as s, s.begin():
            token = await service.create_token(s, user=uuid.UUID(user["id"]))
        return Actor(brand=admin.brand, user=uuid.UUID(user["id"]), token=token, client=self.client)
