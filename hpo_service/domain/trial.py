"""Trials, their states and the only transitions between them.

The state machine is the contract workers rely on (API.md, Trials)::

    new ───────queue──────────────► requested
    new ───────suggest and lease──► active
    new ───────import with result─► completed
    requested ─lease──────────────► active
    active ────complete───────────► completed      (also fail → failed,
    active ────stop───────────────► stopping        infeasible → infeasible,
    stopping ──complete───────────► completed       from active and stopping)
    active, stopping ──lease expires / fail with retry──► requested

``stopping`` is an ``active`` trial the service asked to stop early; it finishes with its
partial result (or fails, or is requeued when its lease runs out). Terminal states never
change again, and no transition deletes a measurement.

``_TRANSITIONS`` is the one table of legal moves. Every state change goes through
``trial_transition`` (one trial) or asks ``sources_for`` which states a bulk statement may
match, so no other module repeats a list of states.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hpo_service.domain.space import Params
from hpo_service.errors import InvalidTransitionError

__all__ = [
    "FINISHED_STATES",
    "LEASED_STATES",
    "PENDING_STATES",
    "Measurement",
    "Trial",
    "TrialSource",
    "TrialState",
    "can_transition",
    "sources_for",
    "trial_transition",
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
# Queued or being evaluated: what designers must avoid and what keeps a study open.
PENDING_STATES = frozenset(TrialState) - FINISHED_STATES

# The key None is a trial being created. A user queues it (``requested``) or imports it
# with its result (``completed``); the engine stores a suggestion already leased to the
# worker that asked (``active``). Only a lease leaves ``requested``: a queued trial has no
# worker that could finish it, so it must be leased first.
_TRANSITIONS: dict[TrialState | None, frozenset[TrialState]] = {
    None: frozenset({TrialState.REQUESTED, TrialState.ACTIVE, TrialState.COMPLETED}),
    TrialState.REQUESTED: frozenset({TrialState.ACTIVE}),
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


def can_transition(current: TrialState | None, target: TrialState) -> bool:
    """Whether the state machine allows ``current`` → ``target`` (None: a new trial)."""
    return target in _TRANSITIONS[current]


def trial_transition(current: TrialState | None, target: TrialState) -> TrialState:
    """The state a trial in ``current`` moves to when asked for ``target``.

    Callers assign the returned state, so no state is ever written without this check.

    Args:
        current: the trial's state, or None for a trial being created.
        target: the state asked for.

    Returns:
        ``target``.

    Raises:
        InvalidTransitionError: the table has no such move (409 ``invalid-state-transition``).
    """
    if not can_transition(current, target):
        origin = "a new trial" if current is None else f"a {current.value} trial"
        raise InvalidTransitionError(f"{origin} cannot become {target.value}")
    return target


def sources_for(target: TrialState) -> frozenset[TrialState]:
    """Every stored state from which ``target`` is a legal move.

    For bulk statements (``UPDATE ... WHERE state IN (...)``): they match exactly the
    rows the table lets move, without repeating the table.
    """
    return frozenset(
        current
        for current, targets in _TRANSITIONS.items()
        if current is not None and target in targets
    )


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
        return self.state in PENDING_STATES
