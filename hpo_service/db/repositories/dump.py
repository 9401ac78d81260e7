"""Whole-table reads and bulk inserts for the lossless dump and load (``hpo export``/``import``).

The dump copies rows column by column, so these queries work on Core tables rather than
ORM rows: no identity map to fill, no per-row events, and every column comes back as the
database stores it. Flush, never commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, Row, Table, insert, select
from sqlalchemy.orm import Session

from hpo_service.db.models import KeySecretCheckRow, MeasurementRow, StudyRow, TrialRow

__all__ = ["DumpRepository"]

_STUDIES = cast(Table, StudyRow.__table__)
_TRIALS = cast(Table, TrialRow.__table__)
_MEASUREMENTS = cast(Table, MeasurementRow.__table__)


def _of_study(table: Table, study_id: str) -> ColumnElement[bool]:
    """The rows of ``table`` that belong to one study (its row, trials, measurements)."""
    if table is _STUDIES:
        return _STUDIES.c.id == study_id
    if table is _TRIALS:
        return _TRIALS.c.study_id == study_id
    if table is _MEASUREMENTS:
        trial_ids = select(_TRIALS.c.id).where(_TRIALS.c.study_id == study_id)
        return _MEASUREMENTS.c.trial_id.in_(trial_ids)
    raise ValueError(f"{table.name} rows belong to no study")


class DumpRepository:
    """Row-for-row copies of the tables a dump holds."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def rows(self, table: Table, *, study_id: str | None = None, chunk: int) -> Iterator[Row[Any]]:
        """Every row of ``table`` (or of one study) in primary-key order, streamed.

        Primary-key order makes two dumps of the same data identical line for line, and
        puts surrogate-keyed rows (measurements, audit entries) in insertion order.

        Raises:
            ValueError: ``study_id`` is given for a table whose rows belong to no study.
        """
        stmt = select(table)
        if study_id is not None:
            stmt = stmt.where(_of_study(table, study_id))
        stmt = stmt.order_by(*table.primary_key.columns).execution_options(yield_per=chunk)
        yield from self.session.execute(stmt)

    def existing_ids(self, table: Table, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already in ``table`` (whose primary key is ``id``)."""
        stmt = select(table.c.id).where(table.c.id.in_(ids))
        return {str(i) for i in self.session.scalars(stmt)}

    def insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert rows as given, in one executemany."""
        self.session.execute(insert(table), rows)

    def key_secret_check(self) -> str | None:
        """The database's key-secret check value (None before anything recorded one)."""
        return self.session.scalar(select(KeySecretCheckRow.check_value))
