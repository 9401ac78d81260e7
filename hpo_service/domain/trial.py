"""Trials, their states and the only transitions between them.

The state machine is the contract workers rely on (API.md, Trials)::

    requested ──lease──► active ──complete──► completed
        ▲                  │  ├──fail──────► failed
        │                  │  ├──infeasible► infeasible
        └──expire / retry──┘  └──stop──────► stopping ──complete──► completed

``stopping`` is an ``active`` trial the service asked to stop early; it finishes with its
partial result. Terminal states never change again, and no transition deletes a
measurement.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hpo_service.domain.space import Params

__all__ = [
    "FINISHED_STATES",
    "LEASED_STATES",
    "Measurement",
    "Trial",
    "TrialSource",
    "TrialState",
    "can_transition",
]


class TrialState(enum.StrEnum):
    """Where a trial is in its life."""

    REQUESTED = "requested"
    ACTIVE = "active"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"
    INFEASIBLE = "infeasible"


class TrialSource(enum.StrEnum):
    """Who proposed a trial's parameters; shown to users so each point can be explained."""

    ENGINE = "engine"
    USER = "user"
    TRANSFER_SEED = "transfer_seed"
    FALLBACK_RANDOM = "fallback_random"


LEASED_STATES = frozenset({TrialState.ACTIVE, TrialState.STOPPING})
FINISHED_STATES = frozenset({TrialState.COMPLETED, TrialState.FAILED, TrialState.INFEASIBLE})

_TRANSITIONS: dict[TrialState, frozenset[TrialState]] = {
    TrialState.REQUESTED: frozenset(
        {TrialState.ACTIVE, TrialState.COMPLETED, TrialState.FAILED, TrialState.INFEASIBLE}
    ),
    TrialState.ACTIVE: frozenset(
        {
            TrialState.REQUESTED,
            TrialState.STOPPING,
            TrialState.COMPLETED,
            TrialState.FAILED,
            TrialState.INFEASIBLE,
        }
    ),
    TrialState.STOPPING: frozenset(
        {TrialState.REQUESTED, TrialState.COMPLETED, TrialState.FAILED, TrialState.INFEASIBLE}
    ),
    TrialState.COMPLETED: frozenset(),
    TrialState.FAILED: frozenset(),
    TrialState.INFEASIBLE: frozenset(),
}


def can_transition(current: TrialState, target: TrialState) -> bool:
    """Whether the state machine allows ``current`` → ``target``.

    ``requested`` may finish directly only for trials whose result is imported by a user;
    workers always go through ``active``.
    """
    return target in _TRANSITIONS[current]


@dataclass(frozen=True)
class Measurement:
    """An intermediate report: metrics at a training step."""

    step: int
    metrics: dict[str, float]
    elapsed_s: float | None = None
    at: datetime | None = None


@dataclass
class Trial:
    """One evaluation of one parameter assignment, with everything learned about it."""

    id: str
    study_id: str
    number: int
    params: Params
    state: TrialState
    source: str = TrialSource.ENGINE
    worker_id: str | None = None
    attempt: int = 0
    lease_expires_at: datetime | None = None
    measurements: list[Measurement] = field(default_factory=list)
    result: dict[str, float] | None = None
    cost: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def is_finished(self) -> bool:
        """True once the trial reached a terminal state."""
        return self.state in FINISHED_STATES

    @property
    def is_pending(self) -> bool:
        """True while the trial is queued or being evaluated: a point designers must avoid."""
        return self.state in (TrialState.REQUESTED, TrialState.ACTIVE, TrialState.STOPPING)
