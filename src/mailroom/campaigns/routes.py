"""Campaign endpoints of the API document."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["email campaigns"])
