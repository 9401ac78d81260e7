"""Queries on trials and measurements. Flush, never commit.

No query here repeats a group of states: which states a statement matches comes from the
domain (``LEASED_STATES``, ``PENDING_STATES``, ``sources_for``), and a trial's state is
written only by ``set_state``, which asks the domain's table first.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Select, Table, case, func, inspect, select, update
from sqlalchemy.orm import Session, selectinload

from hpo_service.db.keyset import Key, Keyset, KeysetSlice
from hpo_service.db.models import MeasurementRow, StudyRow, TrialRow
from hpo_service.domain import (
    LEASED_STATES,
    PENDING_STATES,
    TrialSource,
    TrialState,
    sources_for,
    trial_transition,
)

__all__ = ["TRIALS_BY_NUMBER", "LeaseCheck", "TrialRepository", "set_state", "trial_order"]

_TRIALS = cast(Table, TrialRow.__table__)
# A reclaimed lease goes back to the queue, or fails when its attempts are used up: it
# may match only states from which both moves are legal.
_RECLAIMABLE = sources_for(TrialState.REQUESTED) & sources_for(TrialState.FAILED)


def _values(states: Iterable[TrialState]) -> list[str]:
    """Stored values of ``states``, sorted so the same call binds the same parameters."""
    return sorted(s.value for s in states)


def set_state(row: TrialRow, target: TrialState) -> None:
    """Move ``row`` to ``target``, if the domain's table of transitions allows it.

    The one writer of ``TrialRow.state``: leasing, early stopping, finishing, requeueing
    and stopping a completed study's trials all come through here, so none can make a move the
    table lacks. A row not stored yet is being created; its first state is checked as a
    move from no state.

    Raises:
        InvalidTransitionError: the move is not in the table; ``row`` is left unchanged.
    """
    current = None if inspect(row).transient else TrialState(row.state)
    row.state = trial_transition(current, target).value


# A study's trials by number, unique within it (``uq_trials_study_number`` serves it).
TRIALS_BY_NUMBER = Keyset("trials.number", TrialRow.number)
# Completed trials first, best value first for the goal, then the rest by number. The
# keyset needs one direction and no NULLs: a flag puts trials without a value last, and
# a maximised value is negated.
_NO_VALUE = case((TrialRow.value.is_(None), 1), else_=0)
_TRIALS_BY_VALUE = {
    "minimize": Keyset(
        "trials.value", _NO_VALUE, func.coalesce(TrialRow.value, 0.0), TrialRow.number
    ),
    "maximize": Keyset(
        "trials.value", _NO_VALUE, func.coalesce(-TrialRow.value, 0.0), TrialRow.number
    ),
}


def trial_order(order_by: str, goal: str) -> Keyset:
    """The keyset of a trial list: ``"number"``, or ``"value"`` for the study's ``goal``."""
    return _TRIALS_BY_VALUE[goal] if order_by == "value" else TRIALS_BY_NUMBER


@dataclass(frozen=True)
class LeaseCheck:
    """A trial's lease, owner and study settings: no ORM object, no params.

    Heartbeats and reports extend leases with ``LeaseWrites.touch``; when that matches
    nothing, this locked read tells them why (or, after a concurrent change, that the
    lease is theirs after all). Loading the full ORM row (JSON params, result, metadata)
    costs more than the whole heartbeat; these few columns settle lease ownership,
    tenant visibility and whether a stopping policy applies.
    """

    id: str
    state: str
    worker_id: str | None
    tenant: str
    has_stopping: bool


class TrialRepository:
    """Every query on the ``trials`` and ``measurements`` tables."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: TrialRow) -> TrialRow:
        """Insert a trial."""
        self.session.add(row)
        self.session.flush()
        return row

    def get(self, trial_id: str, *, lock: bool = False) -> tuple[TrialRow, StudyRow] | None:
        """A trial with its study (for tenant checks); ``lock`` locks the trial row."""
        stmt = (
            select(TrialRow, StudyRow)
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(TrialRow.id == trial_id)
        )
        if lock:
            stmt = stmt.with_for_update(of=TrialRow)
        row = self.session.execute(stmt).one_or_none()
        return None if row is None else (row[0], row[1])

    def lease_check(self, trial_id: str) -> LeaseCheck | None:
        """The lease-relevant columns of a trial, its row locked until the transaction ends."""
        stmt = (
            select(
                TrialRow.id,
                TrialRow.state,
                TrialRow.worker_id,
                StudyRow.tenant,
                StudyRow.stopping,  # JSON: a stored None may be JSON null, not SQL NULL
            )
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(TrialRow.id == trial_id)
            .with_for_update(of=TrialRow)
        )
        row = self.session.execute(stmt).one_or_none()
        if row is None:
            return None
        return LeaseCheck(row[0], row[1], row[2], row[3], has_stopping=row[4] is not None)

    def set_lease_expiry(self, trial_id: str, expires_at: datetime) -> None:
        """Move a trial's lease end (the caller holds the row lock from ``lease_check``)."""
        self.session.execute(
            update(_TRIALS).where(_TRIALS.c.id == trial_id).values(lease_expires_at=expires_at)
        )

    def measurements(self, trial_ids: Sequence[str]) -> dict[str, list[MeasurementRow]]:
        """Measurements of several trials in one query, each list in report order."""
        out: dict[str, list[MeasurementRow]] = {tid: [] for tid in trial_ids}
        if not trial_ids:
            return out
        stmt = (
            select(MeasurementRow)
            .where(MeasurementRow.trial_id.in_(trial_ids))
            .order_by(MeasurementRow.trial_id, MeasurementRow.id)
        )
        for m in self.session.scalars(stmt):
            out[m.trial_id].append(m)
        return out

    def all_for_study(self, study_id: str) -> Sequence[TrialRow]:
        """Every trial of a study in number order (the designer's history)."""
        stmt = select(TrialRow).where(TrialRow.study_id == study_id).order_by(TrialRow.number)
        return self.session.scalars(stmt).all()

    def with_measurements(self, study_id: str) -> Sequence[TrialRow]:
        """Every trial of a study with its measurements eagerly loaded (no N+1)."""
        stmt = (
            select(TrialRow)
            .where(TrialRow.study_id == study_id)
            .options(selectinload(TrialRow.measurements))
            .order_by(TrialRow.number)
        )
        return self.session.scalars(stmt).all()

    def leased_to(self, study_id: str, worker_id: str, limit: int) -> Sequence[TrialRow]:
        """Trials of the study this worker holds, oldest first."""
        stmt = (
            select(TrialRow)
            .where(
                TrialRow.study_id == study_id,
                TrialRow.worker_id == worker_id,
                TrialRow.state.in_(_values(LEASED_STATES)),
            )
            .order_by(TrialRow.number)
            .limit(limit)
            .with_for_update()
        )
        return self.session.scalars(stmt).all()

    def queued(self, study_id: str, limit: int) -> Sequence[TrialRow]:
        """Queued trials a lease may take, oldest first, skipping rows another transaction holds."""
        stmt = (
            select(TrialRow)
            .where(
                TrialRow.study_id == study_id,
                TrialRow.state.in_(_values(sources_for(TrialState.ACTIVE))),
            )
            .order_by(TrialRow.number)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return self.session.scalars(stmt).all()

    def count_engine_created(self, study_id: str) -> int:
        """Trials the engine created, i.e. all but user-imported ones; ``max_trials`` caps it."""
        stmt = select(func.count()).where(
            TrialRow.study_id == study_id, TrialRow.source != TrialSource.USER.value
        )
        return int(self.session.scalar(stmt) or 0)

    def pending_exists(self, study_id: str) -> bool:
        """Whether any trial of the study is queued or running (an index range probe)."""
        stmt = select(
            select(TrialRow.id)
            .where(TrialRow.study_id == study_id, TrialRow.state.in_(_values(PENDING_STATES)))
            .exists()
        )
        return bool(self.session.scalar(stmt))

    def movable_to(self, study_id: str, target: TrialState) -> Sequence[TrialRow]:
        """The study's trials that may move to ``target``, rows locked, in number order."""
        stmt = (
            select(TrialRow)
            .where(
                TrialRow.study_id == study_id,
                TrialRow.state.in_(_values(sources_for(target))),
            )
            .order_by(TrialRow.number)
            .with_for_update()
        )
        return self.session.scalars(stmt).all()

    def expired(self, now: datetime, study_ids: Collection[str]) -> Sequence[tuple[TrialRow, int]]:
        """Leased trials of these studies whose lease ended before ``now``, with max_attempts.

        Rows another transaction holds (a heartbeat in flight) are skipped: the next round
        sees them again if they are still expired.
        """
        if not study_ids:
            return []
        stmt = (
            select(TrialRow, StudyRow.max_attempts)
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(
                TrialRow.study_id.in_(sorted(study_ids)),
                TrialRow.state.in_(_values(_RECLAIMABLE)),
                TrialRow.lease_expires_at < now,
            )
            .order_by(TrialRow.lease_expires_at)
            .with_for_update(of=TrialRow, skip_locked=True)
        )
        return [(row[0], row[1]) for row in self.session.execute(stmt)]

    @staticmethod
    def reclaimable_study_ids(now: datetime) -> Select[str]:
        """A subquery: the studies that hold at least one expired lease."""
        return (
            select(TrialRow.study_id)
            .where(TrialRow.state.in_(_values(_RECLAIMABLE)), TrialRow.lease_expires_at < now)
            .distinct()
        )

    def page(
        self,
        study_id: str,
        *,
        state: str | None,
        worker_id: str | None,
        order: Keyset,
        after: Key | None,
        limit: int,
    ) -> KeysetSlice[TrialRow]:
        """Up to ``limit`` of a study's trials in ``order`` (see ``trial_order``)."""
        stmt: Select[TrialRow] = select(TrialRow).where(TrialRow.study_id == study_id)
        if state is not None:
            stmt = stmt.where(TrialRow.state == state)
        if worker_id is not None:
            stmt = stmt.where(TrialRow.worker_id == worker_id)
        return order.fetch_scalars(self.session, stmt, after=after, limit=limit)

    def completed_by_value(self, study_id: str, goal: str) -> Sequence[TrialRow]:
        """Completed trials best first (ties by number)."""
        value = TrialRow.value.asc() if goal == "minimize" else TrialRow.value.desc()
        stmt = (
            select(TrialRow)
            .where(
                TrialRow.study_id == study_id,
                TrialRow.state == TrialState.COMPLETED.value,
                TrialRow.value.is_not(None),
            )
            .order_by(value, TrialRow.number)
        )
        return self.session.scalars(stmt).all()
