"""Leasing work to a worker: its own trials, then queued ones, then new suggestions.

The designer may be slow (a GP fit takes a second), so it never runs inside a write
transaction: that would hold SQLite's single write lock, or a study row lock, for the
whole fit. Instead:

1. In one transaction: reclaim expired leases, hand out the worker's own and queued
   trials, and take a snapshot of the history (its size is the study's ``next_number``).
2. Outside any transaction, under a per-study lock in this process: run the designer.
3. In a second transaction with the study row locked: if nobody created trials in the
   meantime, store and lease the new points; otherwise the pending set changed, so go
   back to step 2 with the fresh history (optimistic concurrency, bounded retries).
   Points that end up not stored (a retry, a study paused meanwhile, a budget spent, a
   failed write) are released from the pool, so they do not linger as pending points.

So two concurrent requests, in one process or in several, never receive the same new
point: the second always sees the first one's points as pending.

Step 2 goes through the process's suggestion pool (``suggestion_pool.py``): the request
waits for the designer at most a deadline, then takes a point the pool precomputed in
the background for this study, and failing that a quasi-random point tagged
``source: fallback_random`` with the reason in the trial's metadata. A fast designer is
always waited for, so its suggestions are exactly those of a direct call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from hpo_service.db.database import Database
from hpo_service.db.ids import new_id
from hpo_service.db.mapping import study_config, to_trial
from hpo_service.db.models import StudyRow, TrialRow
from hpo_service.db.repositories import TrialRepository
from hpo_service.domain import Principal, Role, StudyConfig, StudyState, Trial, TrialState
from hpo_service.engine.designer import Suggestion
from hpo_service.engine.pool import designer_compute, history_key
from hpo_service.services.access import require_role, visible_study
from hpo_service.services.leases import extend, grant, reclaim_in_session
from hpo_service.services.suggestion_pool import shared_pool
from hpo_service.services.transfer import designer_for

__all__ = ["LeaseResult", "request_suggestions"]

_MAX_OPTIMISTIC_RETRIES = 5
_study_locks: dict[str, threading.Lock] = {}
_study_locks_guard = threading.Lock()


def _study_lock(study_id: str) -> threading.Lock:
    with _study_locks_guard:
        lock = _study_locks.get(study_id)
        if lock is None:
            if len(_study_locks) > 10_000:
                _study_locks.clear()  # bounded; a dropped lock only costs a retry
            lock = _study_locks[study_id] = threading.Lock()
        return lock


@dataclass(frozen=True)
class LeaseResult:
    """Trials now leased to the worker and the study's state."""

    trials: list[Trial]
    study_state: StudyState


@dataclass(frozen=True)
class _Snapshot:
    config: StudyConfig
    next_number: int
    completed: list[Trial]
    pending: list[Trial]
    wanted: int


def _request_seed(config: StudyConfig, next_number: int) -> int | None:
    """Same study seed and same history size → same designer seed."""
    if config.seed is None:
        return None
    return (config.seed * 1_000_003 + next_number) % (2**32)


def _room(repo: TrialRepository, study: StudyRow) -> int:
    if study.max_trials is None:
        return 1 << 30
    return max(0, study.max_trials - repo.count_engine_created(study.id))


def _lease_existing(
    repo: TrialRepository,
    study: StudyRow,
    worker_id: str,
    count: int,
    now: datetime,
    lease_seconds: float,
) -> list[TrialRow]:
    own = list(repo.leased_to(study.id, worker_id, count))
    for row in own:
        extend(row, now, lease_seconds)
    queued = list(repo.queued(study.id, count - len(own))) if len(own) < count else []
    for row in queued:
        grant(row, worker_id, now, lease_seconds)
    repo.session.flush()
    return own + queued


def _snapshot(repo: TrialRepository, study: StudyRow, wanted: int) -> _Snapshot:
    history = [to_trial(r) for r in repo.all_for_study(study.id)]
    return _Snapshot(
        config=study_config(study),
        next_number=study.next_number,
        completed=[t for t in history if t.is_finished],
        pending=[t for t in history if t.is_pending],
        wanted=wanted,
    )


def _run_designer(study_id: str, snap: _Snapshot, deadline_s: float | None) -> list[Suggestion]:
    """``snap.wanted`` new points within the deadline (designer, pool or fallback)."""
    seed = _request_seed(snap.config, snap.next_number)
    compute = designer_compute(
        lambda: designer_for(snap.config, seed), snap.completed, snap.pending
    )
    return shared_pool().suggest(
        study_id,
        snap.wanted,
        compute,
        snap.config.space,
        completed=[t.params for t in snap.completed],
        pending=[t.params for t in snap.pending],
        history=history_key(snap.completed, snap.pending),
        seed=seed,
        deadline_s=deadline_s,
    )


def _store_new(
    repo: TrialRepository,
    study: StudyRow,
    suggestions: Sequence[Suggestion],
    worker_id: str,
    now: datetime,
    lease_seconds: float,
) -> list[TrialRow]:
    rows: list[TrialRow] = []
    for s in suggestions:
        row = TrialRow(
            id=new_id("tr"),
            study_id=study.id,
            number=study.next_number,
            params=dict(s.params),
            state=TrialState.ACTIVE.value,
            source=str(s.source),
            attempt=0,
            meta=dict(s.metadata),
            created_at=now,
        )
        study.next_number += 1
        grant(row, worker_id, now, lease_seconds)
        repo.add(row)
        rows.append(row)
    return rows


def request_suggestions(
    db: Database,
    principal: Principal,
    study_id: str,
    *,
    worker_id: str,
    count: int,
    now: datetime,
    lease_seconds: float,
    deadline_s: float | None = None,
) -> LeaseResult:
    """Lease up to ``count`` trials of the study to ``worker_id``.

    Order: trials already leased to this worker (a restarted worker gets its work back),
    then queued ``requested`` trials, then new designer suggestions while the study's
    ``max_trials`` leaves room. Fewer than ``count`` only when the study is not active or
    its budget is spent. ``deadline_s`` bounds the wait for the designer (None: the
    pool's default).

    Raises:
        StudyNotFoundError: unknown id, or another tenant's study.
    """
    require_role(principal, Role.WORKER)
    started = time.monotonic()

    def stored_at() -> datetime:
        # A lease runs from when its trial is handed out, not from when the request came
        # in: a designer slower than the lease would otherwise hand out expired leases.
        return now + timedelta(seconds=time.monotonic() - started)

    with db.write() as session:
        study = visible_study(session, principal, study_id, lock=True)
        repo = TrialRepository(session)
        reclaim_in_session(repo, now, study.id)
        state = StudyState(study.state)
        if state is not StudyState.ACTIVE:
            return LeaseResult([], state)
        leased = _lease_existing(repo, study, worker_id, count, now, lease_seconds)
        wanted = min(count - len(leased), _room(repo, study))
        result = [to_trial(r) for r in leased]
        snap = _snapshot(repo, study, wanted) if wanted > 0 else None
    if snap is None:
        return LeaseResult(result, state)
    for _ in range(_MAX_OPTIMISTIC_RETRIES):
        with _study_lock(study_id):
            suggestions = _run_designer(study_id, snap, deadline_s)
            kept = 0
            outcome: LeaseResult | None = None
            try:
                with db.write() as session:
                    study = visible_study(session, principal, study_id, lock=True)
                    repo = TrialRepository(session)
                    if study.state != StudyState.ACTIVE.value:
                        outcome = LeaseResult(result, StudyState(study.state))
                    else:
                        wanted = min(snap.wanted, _room(repo, study))
                        if study.next_number == snap.next_number or wanted <= 0:
                            rows = _store_new(
                                repo,
                                study,
                                suggestions[:wanted],
                                worker_id,
                                stored_at(),
                                lease_seconds,
                            )
                            trials = [to_trial(r) for r in rows]
                            outcome = LeaseResult(result + trials, StudyState.ACTIVE)
                        else:
                            snap = _snapshot(repo, study, wanted)
                kept = len(outcome.trials) - len(result) if outcome is not None else 0
            finally:
                # Points not stored (retry, paused study, budget spent, failed write) must
                # not stay "handed out": they would act as pending points for ttl_s.
                shared_pool().release(study_id, [s.params for s in suggestions[kept:]])
            if outcome is not None:
                return outcome
    # Heavy contention from other processes: decide with the study row locked throughout.
    with _study_lock(study_id):
        suggestions = []
        kept = 0
        try:
            with db.write() as session:
                study = visible_study(session, principal, study_id, lock=True)
                repo = TrialRepository(session)
                wanted = min(snap.wanted, _room(repo, study))
                if study.state != StudyState.ACTIVE.value or wanted <= 0:
                    return LeaseResult(result, StudyState(study.state))
                snap = _snapshot(repo, study, wanted)
                suggestions = _run_designer(study_id, snap, deadline_s)
                rows = _store_new(repo, study, suggestions, worker_id, stored_at(), lease_seconds)
                trials = [to_trial(r) for r in rows]
            kept = len(rows)
        finally:
            shared_pool().release(study_id, [s.params for s in suggestions[kept:]])
        return LeaseResult(result + trials, StudyState.ACTIVE)
