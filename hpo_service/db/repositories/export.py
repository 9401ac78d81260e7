"""Reads of the history export: every matching trial, streamed, and the columns it needs.

Exports stream with ``yield_per`` (a server-side cursor on PostgreSQL) and fetch
measurements once per chunk, never per trial, so memory stays flat however many trials
there are. Read-only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo_service.db.models import MeasurementRow, StudyRow, TrialRow
from hpo_service.db.repositories.trial_filter import (
    TrialFilter,
    TrialWithStudy,
    trials_with_studies,
)
from hpo_service.db.repositories.trials import TrialRepository

__all__ = ["ExportRepository"]


class ExportRepository:
    """The queries of ``GET /v1/admin/export``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def stream(self, flt: TrialFilter, *, chunk: int) -> Iterator[list[TrialWithStudy]]:
        """Every matching trial in (study, number) order, ``chunk`` rows at a time.

        ``yield_per`` keeps one chunk in memory (a server-side cursor on PostgreSQL).
        """
        stmt = (
            trials_with_studies(flt, TrialRow.created_at)
            .order_by(TrialRow.study_id, TrialRow.number)
            .execution_options(yield_per=chunk)
        )
        for part in self.session.execute(stmt).partitions():
            yield [TrialWithStudy.of(tuple(r)) for r in part]

    def measurements(self, trial_ids: Sequence[str]) -> dict[str, list[MeasurementRow]]:
        """Measurements of many trials in one query (the trial repository's query)."""
        return TrialRepository(self.session).measurements(trial_ids)

    def studies(self, flt: TrialFilter) -> Sequence[StudyRow]:
        """The studies an export covers (to learn their parameter and metric names)."""
        stmt = select(StudyRow)
        if flt.study_id is not None:
            stmt = stmt.where(StudyRow.id == flt.study_id)
        if flt.tenant is not None:
            stmt = stmt.where(StudyRow.tenant == flt.tenant)
        if flt.family is not None:
            stmt = stmt.where(StudyRow.family == flt.family)
        return self.session.scalars(stmt.order_by(StudyRow.id)).all()

    def result_keys(self, flt: TrialFilter, *, chunk: int) -> set[str]:
        """Every metric name in the matching trials' results (one streamed column)."""
        stmt = select(TrialRow.result).join(StudyRow, StudyRow.id == TrialRow.study_id)
        inner = trials_with_studies(flt, TrialRow.created_at).whereclause
        if inner is not None:
            stmt = stmt.where(inner)
        stmt = stmt.where(TrialRow.result.is_not(None)).execution_options(yield_per=chunk)
        keys: set[str] = set()
        for (result,) in self.session.execute(stmt):
            if isinstance(result, dict):
                keys.update((result.get("metrics") or {}).keys())
        return keys
