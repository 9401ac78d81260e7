"""Model shapes: the scale axes a parameterisation maps hyperparameters across.

A shape is what changes between the proxy a study tunes on and the target a user trains:
width (d_model), depth (residual blocks), batch (tokens per optimiser step), duration
(training tokens) and, for mixtures of experts, the expert count, the active experts per
token and the expert hidden width. Only width is required; an axis left out means "not
specified", and the scaling rules refuse to compute a multiplier along an axis that one
side of the comparison leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hpo_service.errors import FieldError, InvalidInputError

__all__ = ["SHAPE_AXES", "ModelShape", "parse_shape"]

SHAPE_AXES = (
    "width",
    "depth",
    "batch_size",
    "tokens",
    "experts",
    "active_experts",
    "expert_width",
)
"""Every axis a shape may carry, in the order responses list them."""


class ModelShape(BaseModel):
    """The size of a model and of its training run.

    Attributes:
        width: residual-stream width d_model (for an MLP, its hidden width).
        depth: number of residual blocks (for a plain MLP, its hidden layers).
        batch_size: tokens (or samples) per optimiser step.
        tokens: training duration in tokens (or samples), so steps = tokens / batch_size.
        experts: number of experts per MoE layer.
        active_experts: experts each token is routed to (top-k).
        expert_width: hidden width of one expert.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(gt=0)
    depth: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    experts: int | None = Field(default=None, gt=0)
    active_experts: int | None = Field(default=None, gt=0)
    expert_width: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_experts(self) -> ModelShape:
        if self.active_experts is not None and self.experts is None:
            raise ValueError("active_experts needs experts")
        if (
            self.active_experts is not None
            and self.experts is not None
            and self.active_experts > self.experts
        ):
            raise ValueError(
                f"active_experts ({self.active_experts}) exceeds experts ({self.experts})"
            )
        if (
            self.tokens is not None
            and self.batch_size is not None
            and self.tokens < self.batch_size
        ):
            raise ValueError("tokens must be at least one batch")
        return self

    @property
    def steps(self) -> int | None:
        """Optimiser steps implied by duration and batch, when both are known."""
        if self.tokens is None or self.batch_size is None:
            return None
        return max(1, self.tokens // self.batch_size)

    def axes(self) -> dict[str, int]:
        """The specified axes only, in ``SHAPE_AXES`` order."""
        dumped = self.model_dump()
        return {k: int(dumped[k]) for k in SHAPE_AXES if dumped[k] is not None}


def parse_shape(data: Any, loc: Sequence[str | int]) -> ModelShape:
    """Validate a shape given as a mapping, reporting errors under ``loc``.

    Args:
        data: the raw value (usually a JSON object) or an existing ``ModelShape``.
        loc: where the value sits in the request, e.g. ``("body", "scale", "proxy")``.

    Raises:
        InvalidInputError: one ``FieldError`` per offending field.
    """
    if isinstance(data, ModelShape):
        return data
    if not isinstance(data, Mapping):
        raise InvalidInputError.at(tuple(loc), "a shape must be an object of axis sizes")
    try:
        return ModelShape.model_validate(dict(data))
    except ValidationError as exc:
        errors = [
            FieldError((*loc, *(str(p) for p in e["loc"])), str(e["msg"])) for e in exc.errors()
        ]
        raise InvalidInputError("invalid model shape", errors) from None
