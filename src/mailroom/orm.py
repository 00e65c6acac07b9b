"""The declarative base every domain's models share, and the column shapes they repeat."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Integer, MetaData, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def uuid_pk() -> Any:
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))


def created_at() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def timestamp() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=True)


def fk(target: str, *, nullable: bool = False, ondelete: str | None = None) -> Any:
    from sqlalchemy import ForeignKey

    return mapped_column(UUID(as_uuid=True), ForeignKey(target, ondelete=ondelete), nullable=nullable)


def one_of(column: str, values: tuple[str, ...], *, name: str) -> CheckConstraint:
    """A CHECK that the column holds one of the values: the database refuses what the code does not know."""
    listed = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} in ({listed})", name=name)


def counter() -> Any:
    # The type is given, not left to a Mapped[int] annotation: the event counters are made without one.
    return mapped_column(Integer, server_default=text("0"), nullable=False)
