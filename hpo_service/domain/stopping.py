"""A study's early-stopping policy as its user wrote it.

``engine.stopping`` validates the JSON object into this spec (precise errors per field)
and resolves it into the policy it applies (defaults filled, which depend on the rule).
The spec keeps exactly the fields the user gave, because the API shows the study's
``stopping`` back as it was sent and the database stores that same object.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["StoppingRule", "StoppingSpec"]

StoppingRule = Literal["median", "percentile", "successive_halving", "none"]


class StoppingSpec(BaseModel):
    """The user's early-stopping object; fields left out take the rule's defaults.

    Attributes:
        rule: ``median``, ``percentile``, ``successive_halving``, or ``none`` (kept so
            the study shows what was asked for; it never stops a trial).
        metric: the metric judged; None: the study's first objective.
        min_steps: no decision before this step (halving: the first rung).
        min_trials: other trials that must have reached the step first.
        percentile: ``percentile`` only: the share of trials kept, in (0, 100).
        reduction_factor: ``successive_halving`` only: keep the best 1/factor per rung.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: StoppingRule
    metric: str | None = None
    min_steps: int | None = None
    min_trials: int | None = None
    # int | float, not float: a percentile sent as 25 is shown and stored as 25.
    percentile: int | float | None = None
    reduction_factor: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The object as the user sent it: only the fields that were given."""
        return self.model_dump(mode="json", exclude_unset=True)
