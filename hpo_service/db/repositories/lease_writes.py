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
the full checks (``TrialRepository.lease_check``) to say *why* (unknown trial, another
worker, finished), so error answers are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, or_, select, update

from hpo_service.db.models import MeasurementRow, StudyRow, TrialRow
from hpo_service.domain import LEASED_STATES

__all__ = ["LeaseTouch", "LeaseWrites", "NewMeasurement"]

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
        # not ``in_()``: an IN list is expanded into the SQL text at every execution
        or_(*(_TRIALS.c.state == state.value for state in sorted(LEASED_STATES))),
    )
    .values(lease_expires_at=bindparam("p_expires_at"))
    .returning(
        _TRIALS.c.state,
        select(_STUDIES.c.tenant)
        .where(_STUDIES.c.id == _TRIALS.c.study_id)
        .scalar_subquery()
        .label("tenant"),
        # JSON: a study without a policy may hold JSON null as well as SQL NULL; both
        # come back as None once the column type has decoded them.
        select(_STUDIES.c.stopping)
        .where(_STUDIES.c.id == _TRIALS.c.study_id)
        .scalar_subquery()
        .label("stopping"),
    )
)

_MEASUREMENT_COLUMNS = ("trial_id", "step", "metrics", "elapsed_s", "at")
_MEASUREMENT_VALUES = tuple(
    bindparam(f"p_{name}", type_=_MEASUREMENTS.c[name].type) for name in _MEASUREMENT_COLUMNS
)
_APPEND = insert(_MEASUREMENTS).values(
    dict(zip(_MEASUREMENT_COLUMNS, _MEASUREMENT_VALUES, strict=True))
)

# PostgreSQL runs a report's two writes as one statement (data-modifying CTEs): the
# measurement is inserted only if the lease UPDATE matched, and the round trip of a
# second statement (about a tenth of a report's CPU, client and server) is saved.
# SQLite has no DML in CTEs; in-process, its second statement costs no round trip.
_TOUCHED = _TOUCH.cte("touched")
_TOUCH_AND_APPEND = select(_TOUCHED).add_cte(
    insert(_MEASUREMENTS)
    .from_select(
        list(_MEASUREMENT_COLUMNS),
        select(*_MEASUREMENT_VALUES).where(select(_TOUCHED.c.state).exists()),
    )
    .cte("appended")
)


@dataclass(frozen=True)
class NewMeasurement:
    """An intermediate report to store with a lease extension."""

    step: int
    metrics: dict[str, Any]
    elapsed_s: float | None
    at: datetime


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

    def touch(
        self,
        trial_id: str,
        worker_id: str,
        expires_at: datetime,
        *,
        then_append: NewMeasurement | None = None,
    ) -> LeaseTouch | None:
        """Extend the lease if ``worker_id`` holds it; None (and no change) otherwise.

        With ``then_append``, the measurement is stored too when (and only when) the
        lease was extended. The row stays locked until the transaction ends. The tenant
        is returned, not checked: the caller decides visibility and rolls back when the
        trial is not the caller's to touch.
        """
        lease = {"p_trial_id": trial_id, "p_worker_id": worker_id, "p_expires_at": expires_at}
        if then_append is not None and self.conn.dialect.name == "postgresql":
            row = self.conn.execute(
                _TOUCH_AND_APPEND, {**lease, **_measurement_params(then_append)}
            ).one_or_none()
        else:
            row = self.conn.execute(_TOUCH, lease).one_or_none()
            if row is not None and then_append is not None:
                self.append(trial_id, then_append)
        if row is None:
            return None
        return LeaseTouch(row.state, row.tenant, has_stopping=row.stopping is not None)

    def append(self, trial_id: str, measurement: NewMeasurement) -> None:
        """Insert one intermediate measurement."""
        self.conn.execute(_APPEND, {"p_trial_id": trial_id, **_measurement_params(measurement)})


def _measurement_params(m: NewMeasurement) -> dict[str, Any]:
    return {"p_step": m.step, "p_metrics": m.metrics, "p_elapsed_s": m.elapsed_s, "p_at": m.at}
