"""Lease bookkeeping: granting, extending and reclaiming expired leases.

A worker that dies never blocks a study: its trials come back as ``requested`` (same
parameters, ``attempt`` + 1) once the lease runs out, or ``failed`` after the study's
``max_attempts``. Reclaiming runs at every suggestion request for that study and
periodically in the server for all studies.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from hpo_service.db.database import Database
from hpo_service.db.models import TrialRow
from hpo_service.db.repositories import TrialRepository
from hpo_service.domain import TrialState

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
    """Lease ``row`` to ``worker_id`` until ``now + lease_seconds``."""
    row.state = TrialState.ACTIVE.value
    row.worker_id = worker_id
    row.attempt = max(row.attempt, 1)
    row.lease_expires_at = lease_end(now, lease_seconds)
    if row.started_at is None:
        row.started_at = now


def extend(row: TrialRow, now: datetime, lease_seconds: float) -> None:
    """Push the lease of a trial its worker is still working on."""
    row.lease_expires_at = lease_end(now, lease_seconds)


def requeue_or_fail(row: TrialRow, max_attempts: int, now: datetime, reason: str) -> None:
    """Give the trial another attempt, or fail it when its attempts are used up."""
    row.worker_id = None
    row.lease_expires_at = None
    row.error = reason
    if row.attempt >= max_attempts:
        row.state = TrialState.FAILED.value
        row.finished_at = now
        row.error = f"{reason}; gave up after {row.attempt} attempts"
    else:
        row.state = TrialState.REQUESTED.value
        row.attempt += 1


def reclaim_in_session(repo: TrialRepository, now: datetime, study_id: str | None) -> int:
    """Reclaim expired leases inside an open transaction; returns how many."""
    expired = repo.expired(now, study_id)
    for row, max_attempts in expired:
        log.info("lease of trial %s (worker %s) expired", row.id, row.worker_id)
        requeue_or_fail(row, max_attempts, now, f"lease expired (worker {row.worker_id})")
    if expired:
        repo.session.flush()
    return len(expired)


def reclaim_expired(db: Database, now: datetime) -> int:
    """Reclaim every expired lease of every study; returns how many trials moved."""
    with db.write() as session:
        return reclaim_in_session(TrialRepository(session), now, None)
