"""Study request and response bodies (API.md, Studies)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpo_service.domain import Objective, OutcomeConstraint, SearchSpace, Study
from hpo_service.scaling.ladder_plan import LR_OFFSETS
from hpo_service.services.refine import DEFAULT_ALGORITHM, DEFAULT_SPAN_OCTAVES
from hpo_service.services.transfer import effective_space

__all__ = [
    "ExtrapolateRequest",
    "ExtrapolationRead",
    "RefineRequest",
    "RuleRead",
    "RungsRead",
    "RungsRequest",
    "StudyCreate",
    "StudyRead",
    "StudyUpdate",
    "TransferSpec",
]

_LABEL = Field(min_length=1, max_length=256)
_RoleName = Annotated[str, Field(min_length=1, max_length=100)]


class TransferSpec(BaseModel):
    """Transfer of a learned search region from earlier studies of the family."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "box", "ellipsoid"] = "box"
    top_k: int = Field(5, ge=1, le=1000)
    sources: Literal["family"] | list[str] = "family"


class StudyCreate(BaseModel):
    """``POST /v1/studies``."""

    model_config = ConfigDict(extra="forbid")

    name: str = _LABEL
    objective: Objective
    space: SearchSpace
    family: str | None = Field(None, min_length=1, max_length=128)
    algorithm: str | None = Field(None, min_length=1, max_length=64)
    objectives: list[Objective] | None = Field(
        None, description="Multi-objective studies: every objective (the first is primary)."
    )
    constraints: list[OutcomeConstraint] | None = Field(
        None, description="Bounds on other metrics a trial must meet to count as feasible."
    )
    stopping: dict[str, Any] | None = Field(
        None, description="Early-stopping policy on intermediate measurements."
    )
    transfer: TransferSpec | None = None
    scale: dict[str, Any] | None = None
    max_trials: int | None = Field(None, ge=1)
    max_attempts: int | None = Field(None, ge=1, le=100)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class StudyUpdate(BaseModel):
    """``PATCH /v1/studies/{id}``: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["active", "paused", "completed"] | None = None
    metadata: dict[str, Any] | None = None
    max_trials: int | None = Field(None, ge=1)


class StudyRead(BaseModel):
    """A study as the API returns it."""

    id: str
    tenant: str
    name: str
    family: str | None
    objective: Objective
    objectives: list[Objective] | None
    constraints: list[OutcomeConstraint] | None
    stopping: dict[str, Any] | None
    space: SearchSpace
    algorithm: str
    transfer: dict[str, Any] | None
    scale: dict[str, Any] | None
    effective_space: dict[str, Any] | None
    max_trials: int | None
    max_attempts: int
    seed: int | None
    metadata: dict[str, Any]
    state: Literal["active", "paused", "completed"]
    created_at: datetime
    updated_at: datetime | None
    trial_counts: dict[str, int]

    @classmethod
    def of(cls, study: Study) -> StudyRead:
        """Build from a domain study."""
        c = study.config
        assert study.created_at is not None
        return cls(
            id=study.id,
            tenant=study.tenant,
            name=study.name,
            family=study.family,
            objective=c.objective,
            objectives=list(c.objectives) or None,
            constraints=list(c.constraints) or None,
            stopping=c.stopping.to_json() if c.stopping is not None else None,
            space=c.space,
            algorithm=c.algorithm,
            transfer=c.transfer.to_json() if c.transfer is not None else None,
            scale=c.scale.to_json() if c.scale is not None else None,
            effective_space=effective_space(c),
            max_trials=study.max_trials,
            max_attempts=study.max_attempts,
            seed=c.seed,
            metadata=study.metadata,
            state=study.state.value,
            created_at=study.created_at,
            updated_at=study.updated_at,
            trial_counts=study.trial_counts,
        )


class RefineRequest(BaseModel):
    """``POST /v1/studies/{id}/refine``: a per-module child seeded from the study's best.

    Every field is optional; an empty body derives the default per-module set.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None, min_length=1, max_length=256, description="Default: '<parent name> (per-module)'."
    )
    roles: dict[str, Annotated[list[_RoleName], Field(max_length=32)]] | None = Field(
        None,
        max_length=16,
        description="Bare name -> roles to derive `<name>.<role>` for (e.g. "
        '`{"lr": ["embedding", "hidden.attn_qkv"]}`); bare names not listed stay global. '
        "Default: lr per in-block matrix plus embedding, readout and norm; init_std/init_var "
        "per hidden, embedding and readout (MoE: experts and router too).",
    )
    span_octaves: float = Field(
        DEFAULT_SPAN_OCTAVES,
        gt=0,
        le=10,
        description="Half-width, in octaves, of each derived log-scaled range around the "
        "parent's best; not clipped to the parent's bounds.",
    )
    algorithm: str = Field(DEFAULT_ALGORITHM, min_length=1, max_length=64)
    max_trials: int | None = Field(None, ge=1)
    keep_global: bool = Field(
        True,
        description="Keep each derived bare name, pinned at the parent's best (a one-value "
        "ordinal), for the roles the child does not name.",
    )


class RungsRequest(BaseModel):
    """``POST /v1/studies/{id}/rungs``: depth rungs of one parameter for the family ladder."""

    model_config = ConfigDict(extra="forbid")

    target: dict[str, Any] = Field(
        description="The target's axes; its depth must exceed the proxy's (e.g. "
        '`{"width": 512, "depth": 8}`).'
    )
    param: str = Field(
        "lr", min_length=1, max_length=100, description="The log-scaled float to sweep."
    )
    offsets: list[float] = Field(
        default_factory=lambda: list(LR_OFFSETS),
        min_length=3,
        max_length=32,
        description="The grid, in octaves from the study's best value.",
    )
    replicates: int = Field(2, ge=1, le=8, description="Trials per grid point, each its own seed.")
    trial_id: str | None = Field(
        None, description="The completed trial to centre on and pin at; default: the best."
    )


class RungsRead(BaseModel):
    """The rung studies created, shallowest first."""

    studies: list[StudyRead]


class ExtrapolateRequest(BaseModel):
    """``POST /v1/studies/{id}/extrapolate``: target axes (omitted ones = the proxy's)."""

    model_config = ConfigDict(extra="forbid")

    target: dict[str, Any] = Field(default_factory=dict)
    trial_id: str | None = None
    use_ladder: bool | None = Field(
        default=None,
        description="apply the family ladder's fitted drifts and transfer verdicts; "
        "default: whenever the family holds studies at more than one proxy shape",
    )


class RuleRead(BaseModel):
    """How one target value was obtained."""

    param: str
    proxy_value: float | int | str
    target_value: float | int | str
    factor: float
    rule: str


class ExtrapolationRead(BaseModel):
    """Target values per module, each with the rule behind its factor."""

    parameterization: str
    proxy: dict[str, int]
    target: dict[str, int]
    multipliers: dict[str, float]
    params: dict[str, float | int | str]
    rules: list[RuleRead]
    warnings: list[str]
    implied: dict[str, float] = Field(
        default_factory=dict,
        description="values the target model needs that are not trial parameters (the "
        "residual-branch and readout multipliers the parameterisation implies): apply them "
        "in the model, next to `params`",
    )
