"""Studies: what is optimised, over which space, by which designer, in which state.

A study's state machine (``study_transition``)::

    active ⇄ paused
    active, paused ──by the user, or when the budget is spent──► completed
    completed ──by the user, with a new budget──► active

A study completes by itself when its ``max_trials`` budget is spent and no trial is
queued or running (``budget_spent``): the last finish completes it, so workers, the API
and the dashboard all see that there is nothing left to do.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpo_service.domain.scale import ScaleConfig
from hpo_service.domain.space import NAME_PATTERN, SearchSpace
from hpo_service.domain.stopping import StoppingSpec
from hpo_service.domain.transfer import FittedTransfer, TransferSpec
from hpo_service.errors import InvalidTransitionError

__all__ = [
    "Goal",
    "Objective",
    "OutcomeConstraint",
    "Study",
    "StudyConfig",
    "StudyState",
    "better",
    "budget_spent",
    "has_room",
    "objective_value",
    "study_transition",
]

Goal = Literal["minimize", "maximize"]


class StudyState(enum.StrEnum):
    """Whether a study hands out work."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


# Reopening (completed → active) is in the table but also needs a new budget; see
# ``study_transition``.
_TRANSITIONS: dict[StudyState, frozenset[StudyState]] = {
    StudyState.ACTIVE: frozenset({StudyState.PAUSED, StudyState.COMPLETED}),
    StudyState.PAUSED: frozenset({StudyState.ACTIVE, StudyState.COMPLETED}),
    StudyState.COMPLETED: frozenset({StudyState.ACTIVE}),
}


def has_room(max_trials: int | None, engine_created: int) -> bool:
    """Whether a budget of ``max_trials`` lets the engine create another trial."""
    return max_trials is None or engine_created < max_trials


def budget_spent(max_trials: int | None, engine_created: int, *, any_pending: bool) -> bool:
    """Whether a study has nothing left to do: budget used up and no trial unfinished.

    Only a finite ``max_trials`` can be spent. ``any_pending`` covers every queued or
    running trial, user-queued ones included, since those are handed out past the budget.
    """
    return not has_room(max_trials, engine_created) and not any_pending


def study_transition(
    current: StudyState, target: StudyState, *, new_budget: bool = False
) -> StudyState:
    """The state a study in ``current`` moves to when asked for ``target``.

    The moves, and why they are what Vizier and Optuna users expect:

    - ``active`` ⇄ ``paused``: pausing stops handing out work (running trials still
      finish), resuming starts again; Vizier's ACTIVE/INACTIVE.
    - ``active``/``paused`` → ``completed``: the user declares the study done, or the
      service does when the budget is spent. It is what workers exit on.
    - ``completed`` → ``active`` only when the same change gives the study room for new
      trials (``new_budget``: a ``max_trials`` above the trials the engine created, or
      none). An Optuna user continues a finished study by asking for more trials, not
      by starting over, because the designer learns from the history; but reopening
      without a budget would either complete again at the next finish or hand out
      nothing, so it must come with one.
    - ``completed`` → ``paused`` is refused: reopen, then pause.

    Asking for the current state is not a move and is always allowed (a PATCH may
    repeat it).

    Raises:
        InvalidTransitionError: a move the table lacks, or a reopening without budget
            (409 ``invalid-state-transition``).
    """
    if current is target:
        return target
    if target not in _TRANSITIONS[current]:
        raise InvalidTransitionError(f"a {current.value} study cannot become {target.value}")
    if current is StudyState.COMPLETED and not new_budget:
        raise InvalidTransitionError(
            "a completed study is reopened only with room for new trials: send max_trials "
            "above the number of trials the engine created (or null) with the state"
        )
    return target


class Objective(BaseModel):
    """The metric a study optimises and in which direction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(pattern=NAME_PATTERN)
    goal: Goal = "minimize"

    def sign(self) -> float:
        """+1 when smaller is better, −1 when larger is; multiply to minimise."""
        return 1.0 if self.goal == "minimize" else -1.0


class OutcomeConstraint(BaseModel):
    """A bound another metric must satisfy for a completed trial to count as feasible."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(pattern=NAME_PATTERN)
    op: Literal["<=", ">="] = "<="
    bound: float

    def satisfied(self, value: float) -> bool:
        """Whether ``value`` meets the bound."""
        return value <= self.bound if self.op == "<=" else value >= self.bound


def better(objective: Objective, a: float, b: float) -> bool:
    """Whether objective value ``a`` is strictly better than ``b``."""
    return objective.sign() * a < objective.sign() * b


@dataclass(frozen=True)
class StudyConfig:
    """The immutable definition of a study that designers see.

    Attributes:
        space: the parameters searched.
        objective: the primary objective.
        algorithm: the designer's registered name.
        seed: the study seed; None is nondeterministic.
        transfer: transfer as the user asked for it, or None.
        scale: the scaling configuration, or None.
        objectives: every objective of a multi-objective study (``objective`` first);
            empty for a single objective.
        constraints: bounds on other metrics.
        stopping: the early-stopping policy as the user gave it, or None.
        fitted_transfer: what the service derived from ``transfer`` at creation (the
            region, seeds and source prior), kept apart from the user's input; None
            without transfer or for ``method: none``.
    """

    space: SearchSpace
    objective: Objective
    algorithm: str
    seed: int | None = None
    transfer: TransferSpec | None = None
    scale: ScaleConfig | None = None
    objectives: tuple[Objective, ...] = ()
    constraints: tuple[OutcomeConstraint, ...] = ()
    stopping: StoppingSpec | None = None
    fitted_transfer: FittedTransfer | None = None

    @property
    def all_objectives(self) -> tuple[Objective, ...]:
        """Every objective, the primary one first."""
        return self.objectives or (self.objective,)


@dataclass
class Study:
    """A study as stored: its configuration plus ownership, limits and state."""

    id: str
    tenant: str
    name: str
    family: str | None
    config: StudyConfig
    state: StudyState
    max_trials: int | None
    max_attempts: int
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    trial_counts: dict[str, int] = field(default_factory=dict)


def objective_value(objective: Objective, metrics: dict[str, float] | None) -> float | None:
    """The objective's value in ``metrics``, or None when absent or not finite."""
    if not metrics or objective.metric not in metrics:
        return None
    value = metrics[objective.metric]
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
