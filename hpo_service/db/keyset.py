"""Keyset pagination: a page resumes after the sort key of the last row the previous showed.

An offset makes page n cost n pages and skips or repeats rows when rows arrive between
requests; a keyset page is one index range scan wherever it starts, and rows inserted
meanwhile land before or after the cursor, never on both sides of it. Every list of the
service pages this way: a ``Keyset`` names the columns that order the rows (together they
identify a row, so the order is total), selects them beside the rows so the key of the
last row comes from the database itself, and turns keys into plain JSON values and back
for the page token (``services/pagination.py`` wraps those in the opaque string).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, tuple_
from sqlalchemy.orm import QueryableAttribute, Session

__all__ = ["AnySelect", "Key", "Keyset", "KeysetSlice"]

Key = tuple[Any, ...]
AnySelect = Select[*tuple[Any, ...]]
R = TypeVar("R")


@dataclass(frozen=True)
class KeysetSlice(Generic[R]):
    """The rows of one page and, when more rows follow, the key to resume after."""

    rows: list[R]
    next_key: Key | None


class Keyset:
    """An ordering by columns that identify a row, and how to resume after a row.

    All columns sort the same way: a row-value comparison such as
    ``(created_at, id) > (:t, :i)`` is only a valid cursor when every column runs in one
    direction (an index on the same columns then serves it as one range). A column that
    should run the other way is given negated.
    """

    def __init__(
        self,
        name: str,
        *columns: ColumnElement[Any] | QueryableAttribute[Any],
        descending: bool = False,
    ) -> None:
        """Describe the ordering.

        Args:
            name: travels in the page token, so a token issued for one ordering is refused
                by another instead of silently skipping rows.
            columns: SQL expressions (usually mapped columns) in sort order; none may be
                NULL, because a comparison with NULL excludes the row.
            descending: whether every column sorts high to low.
        """
        self.name = name
        self.columns: tuple[ColumnElement[Any], ...] = tuple(
            c.expression if isinstance(c, QueryableAttribute) else c for c in columns
        )
        self.descending = descending

    def statement(self, stmt: AnySelect, *, after: Key | None, limit: int) -> AnySelect:
        """``stmt`` ordered by the keyset, resumed after ``after``, at most ``limit`` rows.

        The key columns are not added to the select list here, so the statement keeps the
        shape the caller built (EXPLAIN tests read exactly this).
        """
        if after is not None:
            stmt = stmt.where(self._beyond(after))
        order = [c.desc() if self.descending else c.asc() for c in self.columns]
        return stmt.order_by(*order).limit(limit)

    def fetch(
        self, session: Session, stmt: AnySelect, *, after: Key | None, limit: int
    ) -> KeysetSlice[tuple[Any, ...]]:
        """Up to ``limit`` rows of ``stmt`` after ``after``, each a tuple of its selected columns.

        One extra row is read to learn whether another page follows; the key of the last
        row kept is read from the extra key columns selected beside each row.
        """
        width = len(self.columns)
        keyed = self.statement(stmt.add_columns(*self.columns), after=after, limit=limit + 1)
        rows = session.execute(keyed).all()
        kept = [tuple(r) for r in rows[:limit]]
        next_key = kept[-1][-width:] if len(rows) > limit and kept else None
        return KeysetSlice([r[:-width] for r in kept], next_key)

    def fetch_scalars(
        self, session: Session, stmt: AnySelect, *, after: Key | None, limit: int
    ) -> KeysetSlice[Any]:
        """``fetch`` for a statement that selects one entity: the rows are the entities."""
        got = self.fetch(session, stmt, after=after, limit=limit)
        return KeysetSlice([r[0] for r in got.rows], got.next_key)

    def dump(self, key: Key) -> list[Any]:
        """The key as JSON values (timestamps as RFC 3339 strings)."""
        return [v.isoformat() if isinstance(v, datetime) else v for v in key]

    def load(self, values: Sequence[Any]) -> Key:
        """A key from ``dump``'s values, each checked against its column's Python type.

        Raises:
            ValueError: the values are not a key of this ordering (wrong count or type).
        """
        if len(values) != len(self.columns):
            raise ValueError(f"a key of {self.name} has {len(self.columns)} values")
        return tuple(self._value(c, v) for c, v in zip(self.columns, values, strict=True))

    def _beyond(self, after: Key) -> ColumnElement[bool]:
        key: ColumnElement[Any]
        if len(self.columns) == 1:  # a plain comparison: no row value for one column
            key, bound = self.columns[0], after[0]
        else:
            key, bound = tuple_(*self.columns), tuple_(*after)
        beyond: ColumnElement[bool] = key < bound if self.descending else key > bound
        return beyond

    @staticmethod
    def _value(column: ColumnElement[Any], value: Any) -> Any:
        kind = column.type.python_type
        if kind is datetime and isinstance(value, str):
            return datetime.fromisoformat(value)
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if type(value) is not kind:  # bool is an int: compared exactly
            raise ValueError(f"{value!r} is not a {kind.__name__}")
        return value
