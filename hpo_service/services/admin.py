"""Admin use cases: history across studies and tenants, statistics, workers, API keys.

History pages by keyset over ``(timestamp, id)`` so page 1000 costs what page 1 does; the
token carries the ordering it was issued for, so a token reused with another
``order_by`` is refused instead of silently skipping rows. Key management reuses
``api_keys.create_key`` (the secret is shown once, only its hash is stored) and logs every
change in the audit log.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hpo_service.db.database import Database
from hpo_service.db.ids import is_wellformed
from hpo_service.db.mapping import to_trial
from hpo_service.db.models import ApiKeyRow, TrialRow
from hpo_service.db.repositories import AdminRepository, ApiKeyRepository, TrialFilter
from hpo_service.db.repositories.admin import HistoryOrder, TrialWithStudy
from hpo_service.domain import Principal, Role, Trial
from hpo_service.errors import ApiKeyNotFoundError, InvalidInputError
from hpo_service.services import api_keys, audit
from hpo_service.services.access import require_role, visible_study
from hpo_service.services.pagination import Page, decode_token, encode_token

__all__ = [
    "AdminTrial",
    "DurationSummary",
    "KeyInfo",
    "KeyUsageRecorder",
    "LeaseView",
    "Stats",
    "WorkerView",
    "WorkersOverview",
    "chart_trials",
    "create_key",
    "list_keys",
    "list_trials",
    "revoke_key",
    "stats",
    "system_stats",
    "workers_overview",
]

_DURATION_SAMPLE = 10_000


@dataclass(frozen=True)
class AdminTrial:
    """A trial with the study columns an admin needs to place it."""

    trial: Trial
    tenant: str
    study_name: str
    family: str | None


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


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed: everything but its secret (which is never stored)."""

    id: str
    name: str
    role: str
    tenant: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class LeaseView:
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
    leases: list[LeaseView]
    expired: list[AdminTrial]


def _admin_trials(repo: AdminRepository, rows: list[TrialWithStudy]) -> list[AdminTrial]:
    measurements = repo.measurements([r.trial.id for r in rows])
    return [
        AdminTrial(to_trial(r.trial, measurements[r.trial.id]), r.tenant, r.study_name, r.family)
        for r in rows
    ]


def _cursor(token: str | None, order_by: HistoryOrder) -> tuple[datetime, str] | None:
    state = decode_token(token)
    if state is None:
        return None
    try:
        if state["o"] != order_by:
            raise InvalidInputError.at(
                ("query", "page_token"), "this page token was issued for another order_by"
            )
        return datetime.fromisoformat(str(state["t"])), str(state["i"])
    except (KeyError, ValueError) as exc:
        raise InvalidInputError.at(("query", "page_token"), "malformed page token") from exc


def _stamp(trial: TrialRow, order_by: HistoryOrder) -> datetime:
    stamp = trial.finished_at if order_by.endswith("finished_at") else trial.created_at
    assert stamp is not None  # finished_at orderings only return finished trials
    return stamp


def list_trials(
    db: Database,
    principal: Principal,
    flt: TrialFilter,
    *,
    order_by: HistoryOrder = "created_at",
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[AdminTrial]:
    """Trials of every study and tenant matching ``flt``, one keyset page at a time.

    Measurements of the whole page come from one query, so a page is three statements
    whatever its size.
    """
    require_role(principal, Role.ADMIN)
    if flt.study_id is not None and not is_wellformed(flt.study_id):
        return Page([], None)
    after = _cursor(page_token, order_by)
    with db.read() as session:
        repo = AdminRepository(session)
        rows = repo.history(flt, order_by=order_by, after=after, limit=page_size + 1)
        more = len(rows) > page_size
        rows = rows[:page_size]
        items = _admin_trials(repo, rows)
    token = None
    if more and rows:
        last = rows[-1].trial
        token = encode_token({"o": order_by, "t": _stamp(last, order_by).isoformat(), "i": last.id})
    return Page(items, token)


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
    """Counts by state and source, leases and workers, and recent trial run times (admins).

    Run times summarise the last 10 000 finished trials so the cost stays bounded.
    """
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


def workers_overview(
    db: Database, principal: Principal, *, lease_seconds: float, limit: int = 200
) -> WorkersOverview:
    """Workers holding leases in the caller's scope, their leases, recent expiries.

    The service stores no heartbeat time, but every heartbeat, measurement and lease grant
    sets ``lease_expires_at = now + lease_seconds``; so ``lease_expires_at -
    lease_seconds`` is the last time the worker was heard from about that trial.
    """
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
        leased = repo.leased(tenant, limit)
        leases = [
            LeaseView(
                AdminTrial(to_trial(r.trial), r.tenant, r.study_name, r.family),
                r.trial.lease_expires_at - delta if r.trial.lease_expires_at else None,
            )
            for r in leased
        ]
        expired = [
            AdminTrial(to_trial(r.trial), r.tenant, r.study_name, r.family)
            for r in repo.lease_expired(tenant, limit)
        ]
    return WorkersOverview(workers, leases, expired)


def chart_trials(
    db: Database, principal: Principal, study_id: str, *, limit: int = 5000
) -> list[Trial]:
    """The first ``limit`` trials of a visible study, by number, without measurements.

    The dashboard plots these; the cap keeps a page of a huge study cheap to render.
    """
    with db.read() as session:
        study = visible_study(session, principal, study_id)
        rows = AdminRepository(session).study_trials(study.id, limit)
        return [to_trial(r) for r in rows]


# -- API keys -------------------------------------------------------------------------------


def _key_info(row: ApiKeyRow) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        role=row.role,
        tenant=row.tenant,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def create_key(
    db: Database,
    principal: Principal,
    *,
    role: Role,
    tenant: str,
    name: str,
    expires_at: datetime | None,
    now: datetime,
) -> api_keys.IssuedKey:
    """Issue a key (admins only); the returned secret is the only copy there will be."""
    require_role(principal, Role.ADMIN)
    if expires_at is not None and expires_at <= now:
        raise InvalidInputError.at(("body", "expires_at"), "expires_at must be in the future")
    issued = api_keys.create_key(
        db, role=role, tenant=tenant, name=name, expires_at=expires_at, now=now
    )
    detail: dict[str, Any] = {"role": role.value, "tenant": tenant, "name": name}
    if expires_at is not None:
        detail["expires_at"] = expires_at.isoformat()
    audit.record_now(db, principal, "key.create", now=now, target=issued.id, detail=detail)
    return issued


def list_keys(
    db: Database,
    principal: Principal,
    *,
    tenant: str | None = None,
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[KeyInfo]:
    """Every key (revoked ones too, so their history stays visible), oldest first."""
    require_role(principal, Role.ADMIN)
    cursor = decode_token(page_token)
    after = None
    if cursor is not None:
        try:
            after = (datetime.fromisoformat(str(cursor["c"])), str(cursor["i"]))
        except (KeyError, ValueError) as exc:
            raise InvalidInputError.at(("query", "page_token"), "malformed page token") from exc
    with db.read() as session:
        rows = AdminRepository(session).keys_page(tenant=tenant, after=after, limit=page_size + 1)
        items = [_key_info(r) for r in rows[:page_size]]
    token = None
    if len(rows) > page_size and items:
        token = encode_token({"c": items[-1].created_at.isoformat(), "i": items[-1].id})
    return Page(items, token)


def revoke_key(db: Database, principal: Principal, key_id: str, *, now: datetime) -> None:
    """Revoke a key for good; revoking twice keeps the first time and logs nothing new."""
    require_role(principal, Role.ADMIN)
    with db.write() as session:
        row = ApiKeyRepository(session).get(key_id)
        if row is None:
            raise ApiKeyNotFoundError(key_id)
        if row.revoked_at is not None:
            return
        row.revoked_at = now
        session.flush()
        audit.record(
            session,
            principal,
            "key.revoke",
            now=now,
            target=key_id,
            detail={"role": row.role, "tenant": row.tenant, "name": row.name},
        )


class KeyUsageRecorder:
    """Keeps ``api_keys.last_used_at`` fresh to within ``period`` without slowing auth.

    A process remembers when it last wrote each key and skips the database until
    ``period`` has passed; the UPDATE itself is conditional, so several processes also
    write at most about once per period between them.
    """

    def __init__(self, db: Database, *, period_seconds: float = 60.0) -> None:
        self.db = db
        self.period = timedelta(seconds=period_seconds)
        self._last: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def due(self, key_id: str, now: datetime) -> bool:
        """Whether this process should write ``key_id``'s last use now."""
        with self._lock:
            last = self._last.get(key_id)
            if last is not None and now - last < self.period:
                return False
            if len(self._last) > 100_000:
                self._last.clear()  # bounded; forgetting only costs one extra UPDATE
            self._last[key_id] = now
            return True

    def record(self, key_id: str, now: datetime) -> None:
        """Note a use of ``key_id`` at ``now`` (a no-op most of the time)."""
        if self.due(key_id, now):
            self.write(key_id, now)

    def write(self, key_id: str, now: datetime) -> None:
        """Store the use unless another process stored one within the period."""
        with self.db.write() as session:
            AdminRepository(session).touch_key(key_id, now, now - self.period)
