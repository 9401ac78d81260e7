"""Which workers hold leases now, on which trials, and whose leases ran out (the workers page).

The service stores no heartbeat time, but every heartbeat, measurement and lease grant
sets ``lease_expires_at = now + lease_seconds``; so ``lease_expires_at - lease_seconds``
is the last time the worker was heard from about that trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hpo_service.db.database import Database
from hpo_service.db.repositories import AdminRepository
from hpo_service.domain import Principal
from hpo_service.services.history import AdminTrial, admin_trial

__all__ = ["LeasedTrial", "WorkerView", "WorkersOverview", "workers_overview"]


@dataclass(frozen=True)
class LeasedTrial:
    """A leased trial as the workers page shows it."""

    trial: AdminTrial
    last_contact: datetime | None


@dataclass(frozen=True)
class WorkerView:
    """One worker: its leases and when it was last heard from (estimated)."""

    tenant: str
    worker_id: str
    active: int
    next_expiry: datetime | None
    last_contact: datetime | None


@dataclass(frozen=True)
class WorkersOverview:
    """Active workers, their leases and the trials whose leases ran out."""

    workers: list[WorkerView]
    leases: list[LeasedTrial]
    expired: list[AdminTrial]


def workers_overview(
    db: Database, principal: Principal, *, lease_seconds: float, limit: int = 200
) -> WorkersOverview:
    """Workers holding leases in the caller's scope, their leases, recent expiries."""
    tenant = None if principal.is_admin else principal.tenant
    delta = timedelta(seconds=lease_seconds)
    with db.read() as session:
        repo = AdminRepository(session)
        workers = [
            WorkerView(
                w.tenant,
                w.worker_id,
                w.active,
                w.next_expiry,
                w.last_expiry - delta if w.last_expiry is not None else None,
            )
            for w in repo.worker_leases(tenant)
        ]
        leases = [
            LeasedTrial(
                admin_trial(r),
                r.trial.lease_expires_at - delta if r.trial.lease_expires_at else None,
            )
            for r in repo.leased(tenant, limit)
        ]
        expired = [admin_trial(r) for r in repo.lease_expired(tenant, limit)]
    return WorkersOverview(workers, leases, expired)
