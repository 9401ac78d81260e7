"""Cross-study, cross-tenant queries for admins: history pages, statistics, workers.

Every history ordering is a keyset over ``(timestamp, id)`` backed by one of the
``ix_trials_*_created`` / ``ix_trials_finished`` indexes (migration 0002), so a page costs
an index range scan plus a primary-key lookup of each row's study, whatever the table
size. Read-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVarTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from hpo_service.db.keyset import AnySelect, Key, Keyset, KeysetSlice
from hpo_service.db.models import MeasurementRow, StudyRow, TrialRow
from hpo_service.db.repositories.trial_filter import (
    TrialFilter,
    TrialWithStudy,
    trials_with_studies,
)
from hpo_service.db.repositories.trials import TrialRepository
from hpo_service.domain import TrialState

__all__ = [
    "HISTORY_ORDERS",
    "AdminRepository",
    "HistoryOrder",
    "WorkerLeases",
]

Ts = TypeVarTuple("Ts")

HistoryOrder = Literal["created_at", "-created_at", "finished_at", "-finished_at"]
# Each ordering is named by its ``order_by`` value, so a token of one is refused by another.
HISTORY_ORDERS: dict[HistoryOrder, Keyset] = {
    "created_at": Keyset("created_at", TrialRow.created_at, TrialRow.id),
    "-created_at": Keyset("-created_at", TrialRow.created_at, TrialRow.id, descending=True),
    "finished_at": Keyset("finished_at", TrialRow.finished_at, TrialRow.id),
    "-finished_at": Keyset("-finished_at", TrialRow.finished_at, TrialRow.id, descending=True),
}

_LEASED = (TrialState.ACTIVE.value, TrialState.STOPPING.value)
LEASE_EXPIRED_PREFIX = "lease expired"


@dataclass(frozen=True)
class WorkerLeases:
    """One worker's current leases, as the workers page shows them."""

    tenant: str
    worker_id: str
    active: int
    next_expiry: datetime | None
    last_expiry: datetime | None


def _order_column(order_by: HistoryOrder) -> Any:
    return TrialRow.finished_at if order_by.endswith("finished_at") else TrialRow.created_at


class AdminRepository:
    """Read-only queries across every study and tenant."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- history ---------------------------------------------------------------------------

    def _history(self, flt: TrialFilter, order_by: HistoryOrder) -> AnySelect:
        """The history query before ordering and limit.

        Orderings by ``finished_at`` cover finished trials only: an unfinished trial has
        no place on that time line.
        """
        stmt: AnySelect = trials_with_studies(flt, _order_column(order_by))
        if order_by.endswith("finished_at"):
            stmt = stmt.where(TrialRow.finished_at.is_not(None))
        return stmt

    def history_statement(
        self, flt: TrialFilter, *, order_by: HistoryOrder, after: Key | None, limit: int
    ) -> AnySelect:
        """The SELECT of one history page (exposed so a test can EXPLAIN it)."""
        keyset = HISTORY_ORDERS[order_by]
        return keyset.statement(self._history(flt, order_by), after=after, limit=limit)

    def history(
        self, flt: TrialFilter, *, order_by: HistoryOrder, after: Key | None, limit: int
    ) -> KeysetSlice[TrialWithStudy]:
        """Up to ``limit`` trials across studies in ``order_by`` order after the key."""
        got = HISTORY_ORDERS[order_by].fetch(
            self.session, self._history(flt, order_by), after=after, limit=limit
        )
        return KeysetSlice([TrialWithStudy.of(r) for r in got.rows], got.next_key)

    def measurements(self, trial_ids: Sequence[str]) -> dict[str, list[MeasurementRow]]:
        """Measurements of many trials in one query (the trial repository's query)."""
        return TrialRepository(self.session).measurements(trial_ids)

    def study_trials(self, study_id: str, limit: int) -> Sequence[TrialRow]:
        """The first ``limit`` trials of one study by number (the dashboard's charts)."""
        stmt = (
            select(TrialRow)
            .where(TrialRow.study_id == study_id)
            .order_by(TrialRow.number)
            .limit(limit)
        )
        return self.session.scalars(stmt).all()

    # -- statistics ------------------------------------------------------------------------

    def _scoped(self, stmt: Select[*Ts], tenant: str | None) -> Select[*Ts]:
        if tenant is None:
            return stmt
        return stmt.join(StudyRow, StudyRow.id == TrialRow.study_id).where(
            StudyRow.tenant == tenant
        )

    def counts_by(self, column: Any, tenant: str | None = None) -> dict[str, int]:
        """Trials per value of ``column`` (state or source)."""
        stmt = self._scoped(select(column, func.count()).select_from(TrialRow), tenant)
        return {str(k): int(n) for k, n in self.session.execute(stmt.group_by(column))}

    def count_lease_expiries(self, tenant: str | None = None) -> int:
        """Trials whose latest event was a lease running out (requeued or failed for it)."""
        stmt = select(func.count()).select_from(TrialRow)
        stmt = self._scoped(stmt, tenant).where(TrialRow.error.like(f"{LEASE_EXPIRED_PREFIX}%"))
        return int(self.session.scalar(stmt) or 0)

    def count_overdue(self, now: datetime, tenant: str | None = None) -> int:
        """Leases already past their expiry that housekeeping has not reclaimed yet."""
        stmt = select(func.count()).select_from(TrialRow)
        stmt = self._scoped(stmt, tenant).where(
            TrialRow.state.in_(_LEASED), TrialRow.lease_expires_at < now
        )
        return int(self.session.scalar(stmt) or 0)

    def worker_leases(self, tenant: str | None = None) -> list[WorkerLeases]:
        """Per (tenant, worker): how many trials it holds and when its leases end."""
        stmt = (
            select(
                StudyRow.tenant,
                TrialRow.worker_id,
                func.count(),
                func.min(TrialRow.lease_expires_at),
                func.max(TrialRow.lease_expires_at),
            )
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(TrialRow.state.in_(_LEASED), TrialRow.worker_id.is_not(None))
            .group_by(StudyRow.tenant, TrialRow.worker_id)
            .order_by(StudyRow.tenant, TrialRow.worker_id)
        )
        if tenant is not None:
            stmt = stmt.where(StudyRow.tenant == tenant)
        out = []
        for row in self.session.execute(stmt):
            out.append(WorkerLeases(row[0], str(row[1]), int(row[2]), row[3], row[4]))
        return out

    def leased(self, tenant: str | None, limit: int) -> list[TrialWithStudy]:
        """Currently leased trials, soonest expiry first."""
        stmt = (
            select(TrialRow, StudyRow.tenant, StudyRow.name, StudyRow.family)
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(TrialRow.state.in_(_LEASED))
            .order_by(TrialRow.lease_expires_at, TrialRow.id)
            .limit(limit)
        )
        if tenant is not None:
            stmt = stmt.where(StudyRow.tenant == tenant)
        return [TrialWithStudy.of(tuple(r)) for r in self.session.execute(stmt)]

    def lease_expired(self, tenant: str | None, limit: int) -> list[TrialWithStudy]:
        """Trials whose latest event was a lease expiry, newest trials first."""
        stmt = (
            select(TrialRow, StudyRow.tenant, StudyRow.name, StudyRow.family)
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(TrialRow.error.like(f"{LEASE_EXPIRED_PREFIX}%"))
            .order_by(TrialRow.created_at.desc(), TrialRow.id.desc())
            .limit(limit)
        )
        if tenant is not None:
            stmt = stmt.where(StudyRow.tenant == tenant)
        return [TrialWithStudy.of(tuple(r)) for r in self.session.execute(stmt)]

    def recent_durations(self, limit: int, tenant: str | None = None) -> list[float]:
        """Run time in seconds of the ``limit`` most recently finished leased trials."""
        stmt = (
            select(TrialRow.started_at, TrialRow.finished_at)
            .select_from(TrialRow)
            .where(TrialRow.finished_at.is_not(None), TrialRow.started_at.is_not(None))
            .order_by(TrialRow.finished_at.desc(), TrialRow.id.desc())
            .limit(limit)
        )
        stmt = self._scoped(stmt, tenant)
        out = []
        for started, finished in self.session.execute(stmt):
            if started is not None and finished is not None:
                out.append(max(0.0, (finished - started).total_seconds()))
        return out
