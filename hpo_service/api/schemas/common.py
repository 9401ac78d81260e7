"""Schemas shared by several resources: pages and problem details."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["FieldProblem", "Page", "Problem"]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a list; pass ``next_page_token`` back as ``page_token`` for the next."""

    items: list[T]
    next_page_token: str | None


class FieldProblem(BaseModel):
    """One invalid field: its location in the request and what is wrong."""

    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error response."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = None
