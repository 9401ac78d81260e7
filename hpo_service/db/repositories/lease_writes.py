"""The writes of a worker's hot path (heartbeat, measurement), as prebuilt Core statements.

Why a separate repository on a plain ``Connection``: profiled, a heartbeat spent most of
its database CPU not in the database but in SQLAlchemy building the same statements again
(``select(...).join(...).where(...)`` coerces every clause and computes a cache key each
time) and in the ORM session around them. These statements are built once at import,
with bound parameters, so a call only binds values and runs them; their cache keys are
memoised on the statement objects.

``touch`` both checks and extends a lease in one ``UPDATE ... RETURNING``: the row matches
only while the named worker holds the lease, and the UPDATE takes the same row lock the
separate ``SELECT ... FOR UPDATE`` used to. When nothing matches, the caller falls back to
the full checks (``TrialRepository.lease_view``) to say *why* (unknown trial, another
worker, finished), so error answers are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from hpo_service.db.models import MeasurementRow, StudyRow, TrialRow
from hpo_service.domain import LEASED_STATES

__all__ = ["LeaseTouch", "LeaseWrites"]

_TRIALS = cast(Table, TrialRow.__table__)
_STUDIES = cast(Table, StudyRow.__table__)
_MEASUREMENTS = cast(Table, MeasurementRow.__table__)

# Parameters are named p_*: SQLAlchemy reserves column names for its own SET/VALUES binds.
# SQLite's RETURNING may name only the updated table, so the study's columns come from
# scalar subqueries (one primary-key lookup each) instead of UPDATE ... FROM.
_TOUCH = (
    update(_TRIALS)
    .where(
        _TRIALS.c.id == bindparam("p_trial_id"),
        _TRIALS.c.worker_id == bindparam("p_worker_id"),
        _TRIALS.c.state.in_(sorted(s.value for s in LEASED_STATES)),
    )
    .values(lease_expires_at=bindparam("p_expires_at"))
    .returning(
        _TRIALS.c.state,
        select(_STUDIES.c.tenant).where(_STUDIES.c.id == _TRIALS.c.study_id).scalar_subquery(),
        # JSON: a study without a policy may hold JSON null as well as SQL NULL; both
        # come back as None once the column type has decoded them.
        select(_STUDIES.c.stopping).where(_STUDIES.c.id == _TRIALS.c.study_id).scalar_subquery(),
    )
)

_APPEND = insert(_MEASUREMENTS).values(
    trial_id=bindparam("p_trial_id"),
    step=bindparam("p_step"),
    metrics=bindparam("p_metrics"),
    elapsed_s=bindparam("p_elapsed_s"),
    at=bindparam("p_at"),
)


@dataclass(frozen=True)
class LeaseTouch:
    """A lease just extended: the trial's state and what the caller must still check."""

    state: str
    tenant: str
    has_stopping: bool


class LeaseWrites:
    """Lease extension and measurement inserts on a connection inside a write transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def touch(self, trial_id: str, worker_id: str, expires_at: datetime) -> LeaseTouch | None:
        """Extend the lease if ``worker_id`` holds it; None (and no change) otherwise.

        The row stays locked until the transaction ends. The tenant is returned, not
        checked: the caller decides visibility and rolls back when the trial is not the
        caller's to touch.
        """
        row = self.conn.execute(
            _TOUCH, {"p_trial_id": trial_id, "p_worker_id": worker_id, "p_expires_at": expires_at}
        ).one_or_none()
        if row is None:
            return None
        return LeaseTouch(row[0], row[1], has_stopping=row[2] is not None)

    def append_measurement(
        self,
        trial_id: str,
        *,
        step: int,
        metrics: dict[str, Any],
        elapsed_s: float | None,
        at: datetime,
    ) -> None:
        """Insert one intermediate measurement."""
        self.conn.execute(
            _APPEND,
            {
                "p_trial_id": trial_id,
                "p_step": step,
                "p_metrics": metrics,
                "p_elapsed_s": elapsed_s,
                "p_at": at,
            },
        )
