"""Which trials a cross-study query covers, and the trial-beside-its-study row it reads.

The admin history and the history export select the same rows through the same filter,
so the filter and the statement it builds live here, once, for both repositories.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, select

from hpo_service.db.models import StudyRow, TrialRow

__all__ = ["TrialFilter", "TrialWithStudy", "trials_with_studies"]

TrialsWithStudies = Select[TrialRow, str, str, str | None]


@dataclass(frozen=True)
class TrialFilter:
    """Which trials a history query or export covers; ``None`` means any.

    ``since``/``until`` bound the timestamp the query orders by (``created_at`` or
    ``finished_at``), half-open: ``since <= t < until``.
    """

    study_id: str | None = None
    family: str | None = None
    tenant: str | None = None
    state: str | None = None
    worker_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class TrialWithStudy:
    """A trial row and the study columns shown beside it."""

    trial: TrialRow
    tenant: str
    study_name: str
    family: str | None

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> TrialWithStudy:
        """The object of one row of ``trials_with_studies``."""
        return cls(row[0], row[1], row[2], row[3])


def trials_with_studies(flt: TrialFilter, stamp: Any) -> TrialsWithStudies:
    """SELECT trial, tenant, study name, family of the trials ``flt`` covers.

    Args:
        stamp: the timestamp column ``since``/``until`` bound.
    """
    stmt = select(TrialRow, StudyRow.tenant, StudyRow.name, StudyRow.family).join(
        StudyRow, StudyRow.id == TrialRow.study_id
    )
    conditions: list[ColumnElement[bool]] = []
    if flt.study_id is not None:
        conditions.append(TrialRow.study_id == flt.study_id)
    if flt.state is not None:
        conditions.append(TrialRow.state == flt.state)
    if flt.worker_id is not None:
        conditions.append(TrialRow.worker_id == flt.worker_id)
    if flt.tenant is not None:
        conditions.append(StudyRow.tenant == flt.tenant)
    if flt.family is not None:
        conditions.append(StudyRow.family == flt.family)
    if flt.since is not None:
        conditions.append(stamp >= flt.since)
    if flt.until is not None:
        conditions.append(stamp < flt.until)
    return stmt.where(*conditions) if conditions else stmt
