"""The service's answers as typed models: studies, trials, pages, leases, extrapolations.

These mirror API.md (and what the server's schemas send) but are written separately from
``hpo_service.api.schemas`` on purpose: the SDK must import without the server's stack
(SQLAlchemy, FastAPI, the engine), and a model shared with the server would make every
server-side refactor a client release.

Compatibility runs both ways, which decides how each field is declared:

- every model allows extra fields (``extra="allow"``), so a newer server that adds fields
  (API.md allows it) never breaks an older client; the extras stay readable through
  ``model_extra`` and come back out of ``model_dump``;
- a field API.md fixes and the server always fills is required, so a server that breaks
  the contract fails loudly at parse time (``pydantic.ValidationError``) instead of
  surfacing later as a ``None`` where a value was promised;
- a field that may be null, or that the service added beyond API.md, defaults (``None``
  or empty), so an older server that does not send it still parses.

States are plain strings, not enums, for the same reason: a state added later must not
make an older client refuse a whole page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Condition",
    "Constraint",
    "ExtrapolationResult",
    "ExtrapolationRule",
    "HeartbeatReply",
    "Measurement",
    "MeasurementReply",
    "Objective",
    "Page",
    "ParamValue",
    "Parameter",
    "SearchSpace",
    "Study",
    "StudyPage",
    "SuggestionBatch",
    "Trial",
    "TrialPage",
    "TrialResult",
]

ParamValue = int | float | str
"""One parameter value: ``int`` before ``float`` so that integer parameters stay ints."""

T = TypeVar("T")


class _Model(BaseModel):
    """Base of every answer: unknown fields are kept, never rejected."""

    model_config = ConfigDict(extra="allow")


# Studies ----------------------------------------------------------------------------------
class Objective(_Model):
    """The metric a study optimises and in which direction (``minimize`` | ``maximize``)."""

    metric: str
    goal: str = "minimize"


class Constraint(_Model):
    """A bound another metric must meet for a completed trial to count as feasible."""

    metric: str
    op: str = "<="
    bound: float


class Condition(_Model):
    """Makes a parameter active only while its ``parent`` takes one of ``values``."""

    parent: str
    values: list[ParamValue]


class Parameter(_Model):
    """One dimension of a search space; which bounds are set depends on ``type``.

    ``float``/``int`` have ``low``, ``high`` and ``scale``; ``categorical`` has ``choices``;
    ``ordinal`` has ``values`` (and ``scale``).
    """

    name: str
    type: str
    low: int | float | None = None
    high: int | float | None = None
    scale: str | None = None
    choices: list[str] | None = None
    values: list[int | float] | None = None
    conditions: Condition | None = None


class SearchSpace(_Model):
    """The ordered parameters of a study."""

    parameters: list[Parameter]

    def names(self) -> list[str]:
        """The parameter names, in the space's order."""
        return [p.name for p in self.parameters]


class Study(_Model):
    """A study as the service returns it (``POST``/``GET``/``PATCH /v1/studies...``).

    Attributes:
        trial_counts: number of trials per state; states with none may be missing.
        effective_space: the learned region suggestions come from, when transfer is on.
    """

    id: str
    tenant: str
    name: str
    family: str | None = None
    objective: Objective
    objectives: list[Objective] | None = None
    constraints: list[Constraint] | None = None
    stopping: dict[str, Any] | None = None
    space: SearchSpace
    algorithm: str
    transfer: dict[str, Any] | None = None
    scale: dict[str, Any] | None = None
    effective_space: dict[str, Any] | None = None
    max_trials: int | None = None
    max_attempts: int
    seed: int | None = None
    metadata: dict[str, Any]
    state: str
    created_at: datetime
    updated_at: datetime | None = None
    trial_counts: dict[str, int]

    def objective_names(self) -> list[str]:
        """Every objective metric, the primary first, each once.

        A single-objective study has just ``objective``; a multi-objective one repeats it
        as the first of ``objectives``.
        """
        names = [self.objective.metric]
        for extra in self.objectives or []:
            if extra.metric not in names:
                names.append(extra.metric)
        return names


# Trials -----------------------------------------------------------------------------------
class Measurement(_Model):
    """An intermediate report of a running trial."""

    step: int
    metrics: dict[str, float]
    elapsed_s: float | None = None
    at: datetime | None = None


class TrialResult(_Model):
    """The final metrics of a finished trial."""

    metrics: dict[str, float]


class Trial(_Model):
    """A trial as the service returns it.

    Attributes:
        params: the parameter values; inactive conditional parameters are absent.
        attempt: 1 on the first lease, +1 each time the trial is requeued.
        result: the final metrics once ``completed`` (``None`` before).
        source: who proposed it (``engine``, ``user``, ``transfer_seed``, ...).
    """

    id: str
    study_id: str
    number: int
    params: dict[str, ParamValue]
    state: str
    worker_id: str | None = None
    attempt: int
    lease_expires_at: datetime | None = None
    measurements: list[Measurement]
    result: TrialResult | None = None
    cost: dict[str, Any] | None = None
    source: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None

    def value(self, metric: str) -> float | None:
        """The final value of ``metric``, or ``None`` when not finished or not reported."""
        if self.result is None:
            return None
        return self.result.metrics.get(metric)


class SuggestionBatch(_Model):
    """``POST /v1/studies/{id}/suggestions``: the trials now leased to the caller.

    Fewer trials than asked for (or none) means there is no work right now; ``study_state``
    tells whether more may come.
    """

    trials: list[Trial]
    study_state: str


class HeartbeatReply(_Model):
    """``POST /v1/trials/{id}/heartbeat``: the extended lease and the stop decision."""

    lease_expires_at: datetime
    should_stop: bool


class MeasurementReply(_Model):
    """``POST /v1/trials/{id}/measurements``: whether to stop the trial early."""

    should_stop: bool


# Pages ------------------------------------------------------------------------------------
class Page(_Model, Generic[T]):
    """One page of a list; pass ``next_page_token`` back as ``page_token`` for the next.

    ``next_page_token`` is ``None`` on the last page.
    """

    items: list[T]
    next_page_token: str | None = None


class StudyPage(Page[Study]):
    """A page of ``GET /v1/studies``."""


class TrialPage(Page[Trial]):
    """A page of ``GET /v1/studies/{id}/trials``."""


# Scale ------------------------------------------------------------------------------------
class ExtrapolationRule(_Model):
    """How one target value was obtained from the proxy's value."""

    param: str
    proxy_value: ParamValue
    target_value: ParamValue
    factor: float
    rule: str


class ExtrapolationResult(_Model):
    """``POST /v1/studies/{id}/extrapolate``: values to use at the target shape.

    Attributes:
        params: absolute values at the target, one per per-module hyperparameter (bare
            names expanded to ``<hparam>.<role>`` where the rule depends on the role).
        multipliers: the shape ratios target/proxy (``width``, ``depth``, ``batch``,
            ``duration``).
    """

    parameterization: str
    proxy: dict[str, int]
    target: dict[str, int]
    multipliers: dict[str, float]
    params: dict[str, ParamValue]
    rules: list[ExtrapolationRule]
    warnings: list[str]
