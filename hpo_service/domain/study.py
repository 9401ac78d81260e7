"""Studies: what is optimised, over which space, by which designer, in which state."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpo_service.domain.space import NAME_PATTERN, SearchSpace

__all__ = [
    "Goal",
    "Objective",
    "OutcomeConstraint",
    "Study",
    "StudyConfig",
    "StudyState",
    "better",
    "objective_value",
]

Goal = Literal["minimize", "maximize"]


class StudyState(enum.StrEnum):
    """Whether a study hands out work."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


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
    """The immutable definition of a study that designers see."""

    space: SearchSpace
    objective: Objective
    algorithm: str
    seed: int | None = None
    transfer: dict[str, Any] | None = None
    scale: dict[str, Any] | None = None
    # Multi-objective studies list every objective here (``objective`` is the first);
    # single-objective studies leave it empty.
    objectives: tuple[Objective, ...] = ()
    constraints: tuple[OutcomeConstraint, ...] = ()
    # Early-stopping policy as given by the user (validated by the engine), or None.
    stopping: dict[str, Any] | None = None

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
