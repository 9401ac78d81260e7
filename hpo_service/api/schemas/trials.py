"""Trial request and response bodies (API.md, Trials)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hpo_service.domain import Trial

__all__ = [
    "BestRead",
    "CompleteRequest",
    "FailRequest",
    "HeartbeatRead",
    "HeartbeatRequest",
    "InfeasibleRequest",
    "MeasurementRead",
    "MeasurementRequest",
    "ShouldStopRead",
    "SuggestionsRead",
    "SuggestionsRequest",
    "TrialBatchCreate",
    "TrialBatchRead",
    "TrialCreate",
    "TrialRead",
]

_WORKER_ID = Field(min_length=1, max_length=128, pattern=r"^[^\s]+$")


class MeasurementRead(BaseModel):
    """An intermediate report."""

    step: int
    metrics: dict[str, float]
    elapsed_s: float | None
    at: datetime | None


class ResultRead(BaseModel):
    """A finished trial's final metrics."""

    metrics: dict[str, float]


class TrialRead(BaseModel):
    """A trial as the API returns it."""

    id: str
    study_id: str
    number: int
    params: dict[str, float | int | str]
    state: str
    worker_id: str | None
    attempt: int
    lease_expires_at: datetime | None
    measurements: list[MeasurementRead]
    result: ResultRead | None
    cost: dict[str, Any] | None
    source: str
    metadata: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @classmethod
    def of(cls, trial: Trial) -> TrialRead:
        """Build from a domain trial."""
        return cls(
            id=trial.id,
            study_id=trial.study_id,
            number=trial.number,
            params=trial.params,
            state=trial.state.value,
            worker_id=trial.worker_id,
            attempt=trial.attempt,
            lease_expires_at=trial.lease_expires_at,
            measurements=[
                MeasurementRead(step=m.step, metrics=m.metrics, elapsed_s=m.elapsed_s, at=m.at)
                for m in trial.measurements
            ],
            result=ResultRead(metrics=trial.result) if trial.result is not None else None,
            cost=trial.cost,
            source=trial.source,
            metadata=trial.metadata,
            created_at=trial.created_at,
            started_at=trial.started_at,
            finished_at=trial.finished_at,
            error=trial.error,
        )


class SuggestionsRequest(BaseModel):
    """``POST /v1/studies/{id}/suggestions``."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = _WORKER_ID
    count: int = Field(1, ge=1, le=100)


class SuggestionsRead(BaseModel):
    """Trials now leased to the worker."""

    trials: list[TrialRead]
    study_state: str


class HeartbeatRequest(BaseModel):
    """``POST /v1/trials/{id}/heartbeat``."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = _WORKER_ID


class HeartbeatRead(BaseModel):
    """The extended lease and the early-stopping decision."""

    lease_expires_at: datetime
    should_stop: bool


class MeasurementRequest(BaseModel):
    """``POST /v1/trials/{id}/measurements``."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = _WORKER_ID
    step: int = Field(ge=0, le=2**62)
    metrics: dict[str, float] = Field(max_length=256)
    elapsed_s: float | None = Field(None, ge=0)


class ShouldStopRead(BaseModel):
    """Whether the worker should stop the trial early."""

    should_stop: bool


class CompleteRequest(BaseModel):
    """``POST /v1/trials/{id}/complete``."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = _WORKER_ID
    metrics: dict[str, float] = Field(max_length=256)
    cost: dict[str, Any] | None = None


class FailRequest(BaseModel):
    """``POST /v1/trials/{id}/fail``."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = _WORKER_ID
    error: str = Field("", max_length=65536)
    retry: bool = False


class InfeasibleRequest(BaseModel):
    """``POST /v1/trials/{id}/infeasible``."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str = _WORKER_ID
    reason: str = Field("", max_length=65536)


class ResultCreate(BaseModel):
    """The final metrics of an imported trial."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float] = Field(max_length=256)


class TrialCreate(BaseModel):
    """``POST /v1/studies/{id}/trials``: queue a point, or import a finished one."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any]
    result: ResultCreate | None = None
    metadata: dict[str, Any] | None = None


class TrialBatchCreate(BaseModel):
    """``POST /v1/studies/{id}/trials:batch``: all or nothing."""

    model_config = ConfigDict(extra="forbid")

    trials: list[TrialCreate] = Field(min_length=1, max_length=1000)


class TrialBatchRead(BaseModel):
    """The trials a batch created."""

    trials: list[TrialRead]


class BestRead(BaseModel):
    """The best completed trial (or the Pareto set); empty before any completes."""

    trials: list[TrialRead]
