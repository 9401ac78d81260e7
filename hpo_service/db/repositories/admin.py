"""Cross-study, cross-tenant queries for admins: history pages, exports, statistics.

Every history ordering is a keyset over ``(timestamp, id)`` backed by one of the
``ix_trials_*_created`` / ``ix_trials_finished`` indexes (migration 0002), so a page costs
an index range scan plus a primary-key lookup of each row's study, whatever the table
size. Exports stream with ``yield_per`` and fetch measurements once per chunk, never per
trial. Flush, never commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVarTuple

from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from hpo_service.db.models import ApiKeyRow, MeasurementRow, StudyRow, TrialRow
from hpo_service.db.repositories.trials import TrialRepository
from hpo_service.domain import TrialState

__all__ = [
    "AdminRepository",
    "HistoryOrder",
    "TrialFilter",
    "TrialWithStudy",
    "WorkerLeases",
]

Ts = TypeVarTuple("Ts")
_History = Select[TrialRow, str, str, str | None]

HistoryOrder = Literal["created_at", "-created_at", "finished_at", "-finished_at"]

_LEASED = (TrialState.ACTIVE.value, TrialState.STOPPING.value)
LEASE_EXPIRED_PREFIX = "lease expired"


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

    def _filtered(self, flt: TrialFilter, stamp: Any) -> _History:
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

    def history_statement(
        self,
        flt: TrialFilter,
        *,
        order_by: HistoryOrder,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> _History:
        """The SELECT of one history page (exposed so a test can EXPLAIN it).

        Orderings by ``finished_at`` cover finished trials only: an unfinished trial has
        no place on that time line.
        """
        stamp = _order_column(order_by)
        stmt = self._filtered(flt, stamp)
        if order_by.endswith("finished_at"):
            stmt = stmt.where(TrialRow.finished_at.is_not(None))
        descending = order_by.startswith("-")
        if after is not None:
            key = tuple_(stamp, TrialRow.id)
            stmt = stmt.where(key < tuple_(*after) if descending else key > tuple_(*after))
        if descending:
            stmt = stmt.order_by(stamp.desc(), TrialRow.id.desc())
        else:
            stmt = stmt.order_by(stamp.asc(), TrialRow.id.asc())
        return stmt.limit(limit)

    def history(
        self,
        flt: TrialFilter,
        *,
        order_by: HistoryOrder,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[TrialWithStudy]:
        """One page of trials across studies, in ``order_by`` order after the cursor."""
        stmt = self.history_statement(flt, order_by=order_by, after=after, limit=limit)
        return [TrialWithStudy(r[0], r[1], r[2], r[3]) for r in self.session.execute(stmt)]

    def measurements(self, trial_ids: Sequence[str]) -> dict[str, list[MeasurementRow]]:
        """Measurements of many trials in one query (the trial repository's query)."""
        return TrialRepository(self.session).measurements(trial_ids)

    def stream(self, flt: TrialFilter, *, chunk: int) -> Iterator[list[TrialWithStudy]]:
        """Every matching trial in (study, number) order, ``chunk`` rows at a time.

        ``yield_per`` keeps one chunk in memory (a server-side cursor on PostgreSQL).
        """
        stmt = (
            self._filtered(flt, TrialRow.created_at)
            .order_by(TrialRow.study_id, TrialRow.number)
            .execution_options(yield_per=chunk)
        )
        for part in self.session.execute(stmt).partitions():
            yield [TrialWithStudy(r[0], r[1], r[2], r[3]) for r in part]

    def study_trials(self, study_id: str, limit: int) -> Sequence[TrialRow]:
        """The first ``limit`` trials of one study by number (the dashboard's charts)."""
        stmt = (
            select(TrialRow)
            .where(TrialRow.study_id == study_id)
            .order_by(TrialRow.number)
            .limit(limit)
        )
        return self.session.scalars(stmt).all()

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
        inner = self._filtered(flt, TrialRow.created_at).whereclause
        if inner is not None:
            stmt = stmt.where(inner)
        stmt = stmt.where(TrialRow.result.is_not(None)).execution_options(yield_per=chunk)
        keys: set[str] = set()
        for (result,) in self.session.execute(stmt):
            if isinstance(result, dict):
                keys.update((result.get("metrics") or {}).keys())
        return keys

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
        return [TrialWithStudy(r[0], r[1], r[2], r[3]) for r in self.session.execute(stmt)]

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
        return [TrialWithStudy(r[0], r[1], r[2], r[3]) for r in self.session.execute(stmt)]

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

    # -- API keys --------------------------------------------------------------------------

    def keys_page(
        self, *, tenant: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> Sequence[ApiKeyRow]:
        """Keys in creation order, keyset-paginated after ``(created_at, id)``."""
        stmt = select(ApiKeyRow)
        if tenant is not None:
            stmt = stmt.where(ApiKeyRow.tenant == tenant)
        if after is not None:
            stmt = stmt.where(tuple_(ApiKeyRow.created_at, ApiKeyRow.id) > tuple_(*after))
        stmt = stmt.order_by(ApiKeyRow.created_at, ApiKeyRow.id).limit(limit)
        return self.session.scalars(stmt).all()

    def touch_key(self, key_id: str, now: datetime, older_than: datetime) -> bool:
        """Set ``last_used_at`` unless it is already newer than ``older_than``.

        The condition lives in the UPDATE so concurrent server processes write at most
        once per period between them, and a no-op costs one indexed primary-key probe.
        """
        stmt = (
            update(ApiKeyRow)
            .where(
                ApiKeyRow.id == key_id,
                or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < older_than),
            )
            .values(last_used_at=now)
        )
        return bool(self.session.execute(stmt).rowcount)  # type: ignore[attr-defined]
