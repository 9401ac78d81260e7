"""Service statistics: trials by state and source, leases, workers and trial run times.

One function serves ``GET /v1/admin/stats`` (an admin asks) and the Prometheus collector
(nobody asks: it names no tenant). Run times summarise the last 10 000 finished trials so
the cost stays bounded however long the service has run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from hpo_service.db.database import Database
from hpo_service.db.models import TrialRow
from hpo_service.db.repositories import AdminRepository
from hpo_service.domain import Principal, Role
from hpo_service.services.access import require_role

__all__ = ["DurationSummary", "Stats", "stats", "summarize_durations", "system_stats"]

_DURATION_SAMPLE = 10_000


@dataclass(frozen=True)
class DurationSummary:
    """Run time (``finished_at - started_at``) of recently finished trials, in seconds."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True)
class Stats:
    """The numbers of ``GET /v1/admin/stats``."""

    trials_by_state: dict[str, int]
    trials_by_source: dict[str, int]
    queue_depth: int
    active_leases: int
    active_workers: int
    lease_expiries: int
    overdue_leases: int
    trial_duration_s: DurationSummary


def _quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list (numpy's default method)."""
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize_durations(values: list[float]) -> DurationSummary:
    """Count, mean and quantiles of a sample of run times."""
    if not values:
        return DurationSummary(0, None, None, None, None, None)
    ordered = sorted(values)
    return DurationSummary(
        count=len(ordered),
        mean=sum(ordered) / len(ordered),
        p50=_quantile(ordered, 0.5),
        p90=_quantile(ordered, 0.9),
        p99=_quantile(ordered, 0.99),
        max=ordered[-1],
    )


def stats(db: Database, principal: Principal, *, now: datetime, tenant: str | None = None) -> Stats:
    """Counts by state and source, leases and workers, and recent trial run times (admins)."""
    require_role(principal, Role.ADMIN)
    return system_stats(db, now=now, tenant=tenant)


def system_stats(db: Database, *, now: datetime, tenant: str | None = None) -> Stats:
    """``stats`` without a caller, for the Prometheus collector (it names no tenant)."""
    with db.read() as session:
        repo = AdminRepository(session)
        by_state = repo.counts_by(TrialRow.state, tenant)
        by_source = repo.counts_by(TrialRow.source, tenant)
        workers = repo.worker_leases(tenant)
        expiries = repo.count_lease_expiries(tenant)
        overdue = repo.count_overdue(now, tenant)
        durations = repo.recent_durations(_DURATION_SAMPLE, tenant)
    return Stats(
        trials_by_state=by_state,
        trials_by_source=by_source,
        queue_depth=by_state.get("requested", 0),
        active_leases=by_state.get("active", 0) + by_state.get("stopping", 0),
        active_workers=len(workers),
        lease_expiries=expiries,
        overdue_leases=overdue,
        trial_duration_s=summarize_durations(durations),
    )
