"""Transfer request and response bodies (API.md, Transfer and scale)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpo_service.domain import Params, SearchSpace

__all__ = ["RegionPreviewRequest", "RegionRead"]


class RegionPreviewRequest(BaseModel):
    """``POST /v1/families/{family}/region:preview``."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["box", "ellipsoid"] = "box"
    top_k: int = Field(5, ge=1, le=1000)
    space: SearchSpace
    sources: Literal["family"] | list[str] = "family"


class RegionRead(BaseModel):
    """A learned region, in the encoded unit cube and in natural units.

    ``bounds`` maps each numeric parameter to ``{"encoded": [lo, hi]}`` plus ``low``/
    ``high`` (float, int) or ``values`` (ordinal) in natural units; ellipsoids add
    ``axes``, ``center`` and ``matrix`` (``(z - c)ᵀ matrix (z - c) <= 1`` over ``axes``).
    ``space`` is the region's bounding box as a search space; ``version`` grows by one
    with each expansion of the negative-transfer guard, listed in ``expansions``.
    """

    method: str
    kind: Literal["box", "ellipsoid"]
    version: int
    level: int
    study_id: str | None = None
    family: str | None = None
    sources: list[str]
    rejected_sources: list[dict[str, Any]]
    bounds: dict[str, dict[str, Any]]
    axes: list[str] | None = None
    center: dict[str, Any] | None = None
    matrix: list[list[float]] | None = None
    volume_fraction: float
    categorical_subsets: dict[str, list[str]]
    space: dict[str, Any]
    seeds: list[Params]
    fit: dict[str, Any] | None
    expansions: list[dict[str, Any]]
    region: dict[str, Any]
