"""Admin request and response bodies (API.md, Admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpo_service.api.schemas.trials import TrialRead
from hpo_service.services.audit import AuditEntry
from hpo_service.services.history import AdminTrial
from hpo_service.services.keys_admin import KeyInfo
from hpo_service.services.stats import DurationSummary, Stats

__all__ = [
    "AdminTrialRead",
    "AuditRead",
    "DurationRead",
    "KeyCreate",
    "KeyCreated",
    "KeyRead",
    "LatencyRead",
    "StatsRead",
]


class AdminTrialRead(TrialRead):
    """A trial with the study it belongs to, for history across tenants."""

    tenant: str
    study_name: str
    family: str | None

    @classmethod
    def of_admin(cls, item: AdminTrial) -> AdminTrialRead:
        """Build from a service result."""
        base = TrialRead.of(item.trial).model_dump()
        return cls(**base, tenant=item.tenant, study_name=item.study_name, family=item.family)


class KeyCreate(BaseModel):
    """``POST /v1/admin/keys``."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "client", "worker"]
    tenant: str = Field(min_length=1, max_length=128)
    name: str = Field("", max_length=128)
    expires_at: datetime | None = Field(
        None, description="When the key stops working (RFC 3339); null = never."
    )


class KeyCreated(BaseModel):
    """A new key. ``key`` is shown here once and never again: only its hash is stored."""

    id: str
    key: str
    role: str
    tenant: str
    name: str
    created_at: datetime
    expires_at: datetime | None


class KeyRead(BaseModel):
    """A key as listed: no secret, ever."""

    id: str
    name: str
    role: str
    tenant: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(
        description="Last authenticated use, to within a minute (writes are throttled)."
    )
    revoked_at: datetime | None

    @classmethod
    def of(cls, info: KeyInfo) -> KeyRead:
        """Build from a service result."""
        return cls(**info.__dict__)


class DurationRead(BaseModel):
    """Summary of a sample of durations, in seconds (null when the sample is empty)."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, summary: DurationSummary) -> DurationRead:
        """Build from a service result."""
        return cls(**summary.__dict__)


class LatencyRead(BaseModel):
    """Request latency of one route in this server process (from the metrics histogram)."""

    route: str
    method: str
    count: int
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None


class StatsRead(BaseModel):
    """``GET /v1/admin/stats``."""

    trials_by_state: dict[str, int]
    trials_by_source: dict[str, int]
    queue_depth: int = Field(description="Trials queued as `requested`, waiting for a worker.")
    active_leases: int
    active_workers: int = Field(description="Distinct (tenant, worker_id) holding leases.")
    lease_expiries: int = Field(
        description="Trials whose latest event was a lease running out (requeued or failed)."
    )
    overdue_leases: int = Field(description="Leases past expiry, not yet reclaimed.")
    trial_duration_s: DurationRead = Field(
        description="Run time of the last 10 000 finished trials (started → finished)."
    )
    request_latency: list[LatencyRead] = Field(
        description="Per-route request latency in the process that answered (since start)."
    )

    @classmethod
    def of(cls, stats: Stats, latency: list[LatencyRead]) -> StatsRead:
        """Build from a service result and this process's latency figures."""
        return cls(
            trials_by_state=stats.trials_by_state,
            trials_by_source=stats.trials_by_source,
            queue_depth=stats.queue_depth,
            active_leases=stats.active_leases,
            active_workers=stats.active_workers,
            lease_expiries=stats.lease_expiries,
            overdue_leases=stats.overdue_leases,
            trial_duration_s=DurationRead.of(stats.trial_duration_s),
            request_latency=latency,
        )


class AuditRead(BaseModel):
    """One audit-log entry."""

    id: int
    at: datetime
    actor_key_id: str | None
    actor_tenant: str | None
    actor_role: str | None
    action: str
    target: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditRead:
        """Build from a service result."""
        return cls(**entry.__dict__)
