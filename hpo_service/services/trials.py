"""Trial use cases: heartbeats, measurements, completion, failure, import, reads.

Every state change checks the caller holds the lease (409 ``trial-not-leased``
otherwise) and goes through the domain's table of transitions (``set_state``; 409
``invalid-state-transition``), inside one transaction with the trial row locked, so a
rejected request leaves the stored trial exactly as it was.

A finishing call (complete, fail, infeasible) locks the study's row before the trial's,
the order suggestion requests use, and completes the study in the same transaction when
it finished the last trial of a spent budget (``complete_if_done``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from hpo_service.db.database import Database
from hpo_service.db.ids import is_wellformed, new_id
from hpo_service.db.mapping import study_config, to_trial
from hpo_service.db.models import StudyRow, TrialRow
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.db.repositories.lease_writes import LeaseTouch, LeaseWrites, NewMeasurement
from hpo_service.db.repositories.trials import LeaseCheck, set_state, trial_order
from hpo_service.domain import (
    FINISHED_STATES,
    LEASED_STATES,
    Objective,
    Principal,
    Role,
    Trial,
    TrialSource,
    TrialState,
    objective_value,
)
from hpo_service.engine.stopping import should_stop, stopping_policy
from hpo_service.errors import (
    CompletionConflictError,
    FieldError,
    InvalidInputError,
    TrialNotFoundError,
    TrialNotLeasedError,
)
from hpo_service.services.access import require_role, visible_study, visible_trial
from hpo_service.services.leases import lease_end, requeue_or_fail
from hpo_service.services.pagination import Page, next_token, read_token
from hpo_service.services.studies import complete_if_done

__all__ = [
    "HeartbeatResult",
    "NewTrial",
    "add_trials",
    "complete_trial",
    "fail_trial",
    "get_trial",
    "heartbeat",
    "list_trials",
    "mark_infeasible",
    "report_measurement",
]


@dataclass(frozen=True)
class HeartbeatResult:
    """The new lease end and whether the service wants the worker to stop early."""

    lease_expires_at: datetime
    should_stop: bool


@dataclass(frozen=True)
class NewTrial:
    """A user-supplied trial: queued when ``metrics`` is None, else imported as completed."""

    params: dict[str, Any]
    metrics: dict[str, float] | None = None
    metadata: dict[str, Any] | None = None


def _digest(payload: Mapping[str, Any]) -> str:
    """A stable fingerprint of a finishing request, for idempotent retries."""
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _check_metrics(metrics: Mapping[str, Any], loc: tuple[str | int, ...]) -> dict[str, float]:
    """Metrics must be finite numbers: NaN/inf results go through ``fail``/``infeasible``."""
    errors = [
        FieldError((*loc, name), f"metric {name!r} must be a finite number, got {value!r}")
        for name, value in metrics.items()
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ]
    if errors:
        raise InvalidInputError("metrics must be finite numbers", errors)
    return {name: float(value) for name, value in metrics.items()}


def _require_objective(
    study: StudyRow, metrics: Mapping[str, float], loc: tuple[str | int, ...]
) -> float:
    objective = Objective.model_validate(study.objective)
    value = objective_value(objective, dict(metrics))
    if value is None:
        raise InvalidInputError.at(
            (*loc, objective.metric), f"the objective metric {objective.metric!r} is missing"
        )
    for extra in study.objectives or ():
        name = extra["metric"]
        if name not in metrics:
            raise InvalidInputError.at((*loc, name), f"the objective metric {name!r} is missing")
    return value


class _Leased(Protocol):
    """What ``_held`` reads: an ORM trial row or a ``LeaseCheck``."""

    @property
    def id(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def worker_id(self) -> str | None: ...


def _held(row: _Leased, worker_id: str) -> None:
    """Raise unless ``worker_id`` holds the trial's lease."""
    if row.state not in LEASED_STATES or row.worker_id != worker_id:
        raise TrialNotLeasedError(
            f"trial {row.id!r} is {row.state}"
            + (
                " and leased to another worker"
                if row.worker_id and row.worker_id != worker_id
                else ""
            )
            + f"; worker {worker_id!r} does not hold its lease"
        )


def _replay_or_conflict(row: TrialRow, state: TrialState, digest: str) -> bool:
    """True when this finishing request repeats the one that finished the trial."""
    if row.state == state.value and row.finish_digest == digest:
        return True
    if TrialState(row.state) in FINISHED_STATES:
        raise CompletionConflictError(
            f"trial {row.id!r} already finished as {row.state} with a different request"
        )
    return False


def _finish(row: TrialRow, state: TrialState, error: str, now: datetime) -> None:
    """End the trial in a terminal state without a result; the lease ends with it."""
    set_state(row, state)
    row.error = error
    row.finished_at = now
    row.lease_expires_at = None


def _locked_for_finish(
    session: Session, principal: Principal, trial_id: str
) -> tuple[TrialRow, StudyRow]:
    """The trial and its study, both rows locked: the study's first (see the module doc)."""
    if is_wellformed(trial_id):
        StudyRepository(session).lock_of_trial(trial_id)
    return visible_trial(session, principal, trial_id, lock=True)


def _read(repo: TrialRepository, row: TrialRow) -> Trial:
    return to_trial(row, repo.measurements([row.id])[row.id])


def _lease(repo: TrialRepository, principal: Principal, trial_id: str) -> LeaseCheck:
    """The trial's lease columns, row locked, if the caller may see it (else 404)."""
    if not is_wellformed(trial_id):
        raise TrialNotFoundError(trial_id)
    view = repo.lease_check(trial_id)
    if view is None or not principal.can_see(view.tenant):
        raise TrialNotFoundError(trial_id)
    return view


def _touch_lease(
    conn: Connection,
    principal: Principal,
    trial_id: str,
    worker_id: str,
    expires: datetime,
    measurement: NewMeasurement | None = None,
) -> LeaseTouch:
    """Check the caller holds the lease, extend it, store ``measurement``; return the lease.

    The common case is one ``UPDATE ... RETURNING`` (with the INSERT, one statement on
    PostgreSQL). When it matches nothing (unknown trial, another worker's lease, a
    finished trial, or a lease that changed hands concurrently) the full checks run on a
    locked read, so the caller gets the same 404/409 as every other state change, or
    the writes after all if the lease is (now) theirs.
    """
    if not is_wellformed(trial_id):
        raise TrialNotFoundError(trial_id)
    writes = LeaseWrites(conn)
    touched = writes.touch(trial_id, worker_id, expires, then_append=measurement)
    if touched is not None:
        if not principal.can_see(touched.tenant):
            raise TrialNotFoundError(trial_id)  # the transaction rolls the writes back
        return touched
    with Session(bind=conn) as session:
        repo = TrialRepository(session)
        view = _lease(repo, principal, trial_id)
        _held(view, worker_id)
        repo.set_lease_expiry(view.id, expires)
    if measurement is not None:
        writes.append(view.id, measurement)
    return LeaseTouch(view.state, view.tenant, view.has_stopping)


def heartbeat(
    db: Database,
    principal: Principal,
    trial_id: str,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
) -> HeartbeatResult:
    """Extend the lease of a trial the worker still runs.

    The hot path of every worker: one prebuilt UPDATE on a plain connection, no ORM
    (same checks, same row lock as every other state change; see ``_touch_lease``).
    """
    require_role(principal, Role.WORKER)
    expires = lease_end(now, lease_seconds)
    with db.write_connection() as conn:
        touched = _touch_lease(conn, principal, trial_id, worker_id, expires)
        return HeartbeatResult(expires, touched.state == TrialState.STOPPING.value)


def report_measurement(
    db: Database,
    principal: Principal,
    trial_id: str,
    *,
    worker_id: str,
    step: int,
    metrics: dict[str, Any],
    elapsed_s: float | None,
    now: datetime,
    lease_seconds: float,
) -> bool:
    """Store an intermediate measurement, extend the lease; return ``should_stop``.

    Like ``heartbeat``, plus the INSERT (in the same statement on PostgreSQL); the ORM
    rows are loaded only when the study has a stopping policy to evaluate, in a session
    joining the same transaction.
    """
    require_role(principal, Role.WORKER)
    clean = _check_metrics(metrics, ("body", "metrics"))
    measurement = NewMeasurement(step=step, metrics=clean, elapsed_s=elapsed_s, at=now)
    expires = lease_end(now, lease_seconds)
    with db.write_connection() as conn:
        touched = _touch_lease(conn, principal, trial_id, worker_id, expires, measurement)
        if touched.state != TrialState.ACTIVE.value or not touched.has_stopping:
            return touched.state == TrialState.STOPPING.value
        with Session(bind=conn) as session:
            row, study = visible_trial(session, principal, trial_id, lock=True)
            _apply_stopping(TrialRepository(session), row, study)
            session.flush()
            return row.state == TrialState.STOPPING.value


def _apply_stopping(repo: TrialRepository, row: TrialRow, study: StudyRow) -> None:
    """Move the trial to ``stopping`` when the study's policy says it is not worth finishing.

    The decision is a pure function of every trial's measurements, made inside the
    report's transaction so the worker learns it in the same response.
    """
    if study.stopping is None:
        return
    config = study_config(study)
    policy = stopping_policy(config.stopping)
    if policy is None:
        return
    history = repo.with_measurements(study.id)
    trials = [to_trial(t, list(t.measurements)) for t in history]
    me = next(t for t in trials if t.id == row.id)
    decision = should_stop(policy, me, trials, config.objective)
    if decision.stop:
        set_state(row, TrialState.STOPPING)
        row.meta = {**(row.meta or {}), "stopped_early": decision.reason}


def complete_trial(
    db: Database,
    principal: Principal,
    trial_id: str,
    *,
    worker_id: str,
    metrics: dict[str, Any],
    cost: dict[str, Any] | None,
    now: datetime,
) -> Trial:
    """Finish a trial with its result; repeating the same request returns the same trial.

    Raises:
        InvalidInputError: the objective is missing or a metric is not finite.
        TrialNotLeasedError: the caller does not hold the lease.
        CompletionConflictError: the trial already finished with a different request.
    """
    require_role(principal, Role.WORKER)
    clean = _check_metrics(metrics, ("body", "metrics"))
    digest = _digest({"worker_id": worker_id, "metrics": clean, "cost": cost})
    with db.write() as session:
        row, study = _locked_for_finish(session, principal, trial_id)
        repo = TrialRepository(session)
        if _replay_or_conflict(row, TrialState.COMPLETED, digest):
            return _read(repo, row)
        _held(row, worker_id)
        value = _require_objective(study, clean, ("body", "metrics"))
        set_state(row, TrialState.COMPLETED)
        row.result = {"metrics": clean}
        row.value = value
        row.cost = dict(cost) if cost is not None else None
        row.finished_at = now
        row.lease_expires_at = None
        row.finish_digest = digest
        session.flush()
        complete_if_done(repo, study)
        return _read(repo, row)


def fail_trial(
    db: Database,
    principal: Principal,
    trial_id: str,
    *,
    worker_id: str,
    error: str,
    retry: bool,
    now: datetime,
) -> Trial:
    """Record a failure; with ``retry`` the trial is queued again while attempts remain."""
    require_role(principal, Role.WORKER)
    digest = _digest({"worker_id": worker_id, "error": error, "retry": retry, "op": "fail"})
    with db.write() as session:
        row, study = _locked_for_finish(session, principal, trial_id)
        repo = TrialRepository(session)
        if _replay_or_conflict(row, TrialState.FAILED, digest):
            return _read(repo, row)
        _held(row, worker_id)
        if retry:
            requeue_or_fail(row, study.max_attempts, now, error)
        else:
            _finish(row, TrialState.FAILED, error, now)
        if row.state == TrialState.FAILED.value:
            row.finish_digest = digest
        session.flush()
        complete_if_done(repo, study)
        return _read(repo, row)


def mark_infeasible(
    db: Database, principal: Principal, trial_id: str, *, worker_id: str, reason: str, now: datetime
) -> Trial:
    """Record that the point cannot be evaluated (diverged, NaN, out of memory ...)."""
    require_role(principal, Role.WORKER)
    digest = _digest({"worker_id": worker_id, "reason": reason, "op": "infeasible"})
    with db.write() as session:
        row, study = _locked_for_finish(session, principal, trial_id)
        repo = TrialRepository(session)
        if _replay_or_conflict(row, TrialState.INFEASIBLE, digest):
            return _read(repo, row)
        _held(row, worker_id)
        _finish(row, TrialState.INFEASIBLE, reason, now)
        row.finish_digest = digest
        session.flush()
        complete_if_done(repo, study)
        return _read(repo, row)


def add_trials(
    db: Database, principal: Principal, study_id: str, trials: Sequence[NewTrial], *, now: datetime
) -> list[Trial]:
    """Queue user trials or import finished ones, all or nothing.

    Raises:
        InvalidInputError: a parameter outside the space or a bad result, with the index of
            the offending trial in ``loc``.
    """
    require_role(principal, Role.CLIENT)
    with db.write() as session:
        study = visible_study(session, principal, study_id, lock=True)
        config = study_config(study)
        repo = TrialRepository(session)
        rows: list[TrialRow] = []
        for i, new in enumerate(trials):
            loc: tuple[str | int, ...] = ("body", "trials", i) if len(trials) > 1 else ("body",)
            params = config.space.validate_params(new.params, loc=(*loc, "params"))
            row = TrialRow(
                id=new_id("tr"),
                study_id=study.id,
                number=study.next_number,
                params=params,
                source=TrialSource.USER.value,
                attempt=0,
                meta=dict(new.metadata or {}),
                created_at=now,
            )
            if new.metrics is None:
                set_state(row, TrialState.REQUESTED)
            else:
                clean = _check_metrics(new.metrics, (*loc, "result", "metrics"))
                row.value = _require_objective(study, clean, (*loc, "result", "metrics"))
                row.result = {"metrics": clean}
                set_state(row, TrialState.COMPLETED)
                row.finished_at = now
            study.next_number += 1
            rows.append(repo.add(row))
        return [to_trial(r) for r in rows]


def get_trial(db: Database, principal: Principal, trial_id: str) -> Trial:
    """One trial with its measurements."""
    with db.read() as session:
        row, _study = visible_trial(session, principal, trial_id)
        return _read(TrialRepository(session), row)


def list_trials(
    db: Database,
    principal: Principal,
    study_id: str,
    *,
    state: str | None = None,
    worker_id: str | None = None,
    order_by: str = "number",
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[Trial]:
    """A page of a study's trials, with measurements loaded in one extra query."""
    with db.read() as session:
        study = visible_study(session, principal, study_id)
        order = trial_order(order_by, Objective.model_validate(study.objective).goal)
        after = read_token(page_token, order)
        repo = TrialRepository(session)
        got = repo.page(
            study.id, state=state, worker_id=worker_id, order=order, after=after, limit=page_size
        )
        measurements = repo.measurements([r.id for r in got.rows])
        items = [to_trial(r, measurements[r.id]) for r in got.rows]
    return Page(items, next_token(order, got.next_key))
