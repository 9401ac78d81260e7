"""Lease bookkeeping: granting, extending and reclaiming expired leases.

A worker that dies never blocks a study: its trials come back as ``requested`` (same
parameters, ``attempt`` + 1) once the lease runs out, or ``failed`` after the study's
``max_attempts``. Reclaiming runs at every suggestion request for that study and
periodically in the server for all studies. A reclaim that fails a study's last
unfinished trial completes the study when its budget is spent, in the same transaction.

Lock order: a study's row before its trials' rows, everywhere (suggestion requests,
finishing calls, reclaims), so no two transactions wait for each other in a cycle.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from hpo_service.db.database import Database
from hpo_service.db.models import StudyRow, TrialRow
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.db.repositories.trials import set_state
from hpo_service.domain import TrialState
from hpo_service.services.studies import complete_if_done

__all__ = [
    "extend",
    "grant",
    "lease_end",
    "reclaim_expired",
    "reclaim_in_session",
    "requeue_or_fail",
]

log = logging.getLogger(__name__)


def lease_end(now: datetime, lease_seconds: float) -> datetime:
    """When a lease granted or extended at ``now`` runs out."""
    return now + timedelta(seconds=lease_seconds)


def grant(row: TrialRow, worker_id: str, now: datetime, lease_seconds: float) -> None:
    """Lease ``row``, queued or a new suggestion, to ``worker_id`` for ``lease_seconds``.

    Raises:
        InvalidTransitionError: the trial is neither queued nor being created.
    """
    set_state(row, TrialState.ACTIVE)
    row.worker_id = worker_id
    row.attempt = max(row.attempt, 1)
    row.lease_expires_at = lease_end(now, lease_seconds)
    if row.started_at is None:
        row.started_at = now


def extend(row: TrialRow, now: datetime, lease_seconds: float) -> None:
    """Push the lease of a trial its worker is still working on."""
    row.lease_expires_at = lease_end(now, lease_seconds)


def requeue_or_fail(row: TrialRow, max_attempts: int, now: datetime, reason: str) -> None:
    """Give the trial another attempt, or fail it when its attempts are used up.

    Raises:
        InvalidTransitionError: the trial is not leased (nothing to requeue).
    """
    if row.attempt >= max_attempts:
        set_state(row, TrialState.FAILED)
        row.finished_at = now
        row.error = f"{reason}; gave up after {row.attempt} attempts"
    else:
        set_state(row, TrialState.REQUESTED)
        row.attempt += 1
        row.error = reason
    row.worker_id = None
    row.lease_expires_at = None


def reclaim_in_session(repo: TrialRepository, now: datetime, study_id: str | None) -> int:
    """Reclaim expired leases inside an open transaction; returns how many.

    Args:
        repo: trials of the open write transaction.
        now: leases that ended before this are reclaimed.
        study_id: the study whose row the caller has locked; None for every study, whose
            rows are then locked here (busy ones skipped, see
            ``StudyRepository.lock_reclaimable``).
    """
    session = repo.session
    if study_id is None:
        study_ids = [s.id for s in StudyRepository(session).lock_reclaimable(now)]
    else:
        study_ids = [study_id]
    expired = repo.expired(now, study_ids)
    failed_in: set[str] = set()
    for row, max_attempts in expired:
        log.info("lease of trial %s (worker %s) expired", row.id, row.worker_id)
        requeue_or_fail(row, max_attempts, now, f"lease expired (worker {row.worker_id})")
        if row.state == TrialState.FAILED.value:
            failed_in.add(row.study_id)
    if expired:
        session.flush()
    for sid in sorted(failed_in):
        study = session.get(StudyRow, sid)  # locked above or by the caller
        if study is not None:
            complete_if_done(repo, study)
    return len(expired)


def reclaim_expired(db: Database, now: datetime) -> int:
    """Reclaim every expired lease of every study; returns how many trials moved."""
    with db.write() as session:
        return reclaim_in_session(TrialRepository(session), now, None)
