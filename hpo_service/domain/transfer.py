"""Transfer on a study: what its user asked for, and what the service derived from it.

Two things that used to share one dictionary are kept apart:

- ``TransferSpec`` is the user's input (``POST /v1/studies``'s ``transfer``, plus a few
  options benchmarks and tools pass through the service), validated once when the study
  is created. The API shows it back exactly as given.
- ``FittedTransfer`` is what the service computed from the family's earlier studies at
  creation: the region, the seeds, the sources used and rejected, the sources'
  lengthscale prior and GPs (``SourcePrior``), and the summary shown as
  ``effective_space``. It is computed once and never changes, so every request (and a
  restart) sees the same numbers; the negative-transfer guard's growth is recorded on
  the trials, not here.

Storage keeps its layout: the study's ``transfer`` column holds the spec's fields with
the record under ``"fitted"`` (``to_json``/``from_json`` write and read exactly those
keys), and ``effective_space`` holds the record without the bulky prior.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpo_service.domain.region import Box, Ellipsoid, region_from_json
from hpo_service.domain.space import Params

__all__ = [
    "FittedTransfer",
    "RejectedSource",
    "SourceFit",
    "SourcePrior",
    "TransferMethod",
    "TransferSpec",
    "TrustSpec",
]

TransferMethod = Literal["none", "box", "ellipsoid", "quantile_box", "warm_start"]
"""``none``, ``box`` and ``ellipsoid`` are the API's; the others serve benchmarks and tools."""


class TrustSpec(BaseModel):
    """Trust-region options named in a spec (``transfer.exploit.TrustOptions``, by name).

    A benchmark and tool option; a field left out keeps ``TrustOptions``'s default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int | float | None = None
    min_side: int | float | None = None
    patience: int | None = Field(default=None, ge=1, strict=True)
    after: int | None = Field(default=None, ge=0, strict=True)
    global_every: int | None = Field(default=None, ge=0, strict=True)
    max_volume: int | float | None = None


class TransferSpec(BaseModel):
    """How a new study learns from its family's earlier studies, as its user asked.

    The API accepts ``method`` (``none``, ``box``, ``ellipsoid``), ``top_k`` and
    ``sources``; the other fields are options for benchmarks and tools that create
    studies through the service, each with the default the API's studies get.

    Attributes:
        method: how the region is fitted; ``warm_start`` proposes the sources' bests
            and fits no region; ``none`` learns nothing.
        top_k: the best trials of each source that the region is fitted to.
        sources: ``"family"`` (every earlier study of the family) or study ids.
        min_completed: completed trials a source needs to be used; None: ``top_k``.
        seed_phase: points inside the region before the model takes over; None: the
            length ``transfer.seeds.seed_phase_length`` gives.
        margin: the fit's margin around the winners (``transfer.fit.FitOptions``).
        quantile: the quantile box's quantile (``transfer.fit.FitOptions``).
        slack: whether the fit may leave out outlying winners (``transfer.fit.FitOptions``).
        prior: fit the sources' lengthscale prior and GPs at creation.
        prior_mean: give the model the sources' mean too (False: lengthscales only).
        trust: the trust region around the incumbent: True (the default for a model),
            False (off), or options (``TrustSpec``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: TransferMethod = "box"
    top_k: int = Field(default=5, ge=1, strict=True)
    sources: Literal["family"] | list[str] = "family"
    min_completed: int | None = Field(default=None, ge=0, strict=True)
    seed_phase: int | None = Field(default=None, ge=1, strict=True)
    # int | float, not float: what was sent is stored and shown unchanged (2, not 2.0).
    margin: int | float | None = None
    quantile: int | float | None = None
    slack: bool | None = None
    prior: bool = True
    prior_mean: bool = True
    trust: bool | TrustSpec = True

    def to_json(self) -> dict[str, Any]:
        """The spec as its user sent it: only the fields that were given."""
        return self.model_dump(mode="json", exclude_unset=True)


@dataclass(frozen=True)
class RejectedSource:
    """An earlier study the fit did not use, and why (shown with the region)."""

    study_id: str
    reason: str


@dataclass(frozen=True)
class SourceFit:
    """One source's GP near the region, from which the model's prior mean is rebuilt.

    Attributes:
        u: ``n x len(names)`` rows in the region's bounding-box units.
        y: ``n`` standardised values, to maximise (the engine's convention).
        log_rho: per name, the fitted log inverse squared lengthscale (box units).
        log_scale: the fitted log output scale.
        log_noise: the fitted log noise.
    """

    u: Sequence[Sequence[float]]
    y: Sequence[float]
    log_rho: Sequence[float]
    log_scale: float
    log_noise: float

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "u": self.u,
            "y": self.y,
            "log_rho": self.log_rho,
            "log_scale": self.log_scale,
            "log_noise": self.log_noise,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceFit:
        """Read the stored form; the row lists are kept, not copied (they are large)."""
        return cls(
            u=data["u"],
            y=data["y"],
            log_rho=data["log_rho"],
            log_scale=float(data["log_scale"]),
            log_noise=float(data["log_noise"]),
        )


@dataclass(frozen=True)
class SourcePrior:
    """The sources' lengthscales and GPs near the region (``transfer/prior.py``).

    Everything is in the full space's cube units unless said otherwise, so the prior is
    fitted once, at creation, and mapped per request onto whatever narrowed space the
    inner designer is built for.

    Attributes:
        names: the region's coordinate names.
        log_rho: per name, the prior's centre on log rho (NaN: no prior there).
        sigma: per name, the prior's width on log rho (NaN: no prior there).
        per_source: per source, its fitted log rho per name.
        rows: per source, how many rows its fit used.
        lower: the box the sources' rows are expressed in: its lower corner.
        width: that box's width per name.
        sources: per source, its GP (``SourceFit``).
    """

    names: Sequence[str]
    log_rho: Sequence[float]
    sigma: Sequence[float]
    per_source: Sequence[Sequence[float]]
    rows: Sequence[int]
    lower: Sequence[float]
    width: Sequence[float]
    sources: tuple[SourceFit, ...]

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "names": list(self.names),
            "log_rho": list(self.log_rho),
            "sigma": list(self.sigma),
            "per_source": self.per_source,
            "rows": list(self.rows),
            "lower": list(self.lower),
            "width": list(self.width),
            "sources": [s.to_json() for s in self.sources],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourcePrior:
        """Read the stored form."""
        return cls(
            names=list(data["names"]),
            log_rho=data["log_rho"],
            sigma=data["sigma"],
            per_source=data.get("per_source", []),
            rows=data.get("rows", []),
            lower=data["lower"],
            width=data["width"],
            sources=tuple(SourceFit.from_json(s) for s in data.get("sources") or ()),
        )


@dataclass(frozen=True)
class FittedTransfer:
    """What the service derived for a study from its family at creation (version 1).

    Attributes:
        version: the region's version; the guard's expansions count on from it.
        method: the spec's method.
        top_k: the spec's ``top_k``.
        fitted_at: when it was computed.
        sources: the studies used, in the order they were considered.
        rejected_sources: the candidates not used, each with its reason.
        region: the learned region; None for ``warm_start`` or without usable sources.
        fit: the fit's diagnostics (``transfer.fit.FitResult.notes``), shown as given.
        seeds: assignments valid in the study's space, proposed first, in this order.
        reason: why nothing was learned (no usable source); None otherwise.
        prior: the sources' lengthscale prior and GPs; None when not fitted.
        effective_space: the summary the API shows as the study's ``effective_space``
            (region kind, volume, narrowed space); None without a region.
    """

    version: int
    method: str
    top_k: int
    fitted_at: datetime
    sources: tuple[str, ...]
    rejected_sources: tuple[RejectedSource, ...] = ()
    region: Box | Ellipsoid | None = None
    fit: dict[str, Any] | None = None
    seeds: tuple[Params, ...] = ()
    reason: str | None = None
    prior: SourcePrior | None = None
    effective_space: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored record, key for key as the service has always written it.

        ``prior`` is written only when there is one; ``effective_space`` whenever some
        source was usable (None without a region), and not at all when none was.
        """
        out: dict[str, Any] = {
            "version": self.version,
            "method": self.method,
            "top_k": self.top_k,
            "fitted_at": self.fitted_at.isoformat(),
            "sources": list(self.sources),
            "rejected_sources": [
                {"study_id": r.study_id, "reason": r.reason} for r in self.rejected_sources
            ],
            "region": self.region.to_json() if self.region is not None else None,
            "fit": self.fit,
            "seeds": [dict(s) for s in self.seeds],
            "reason": self.reason,
        }
        if self.prior is not None:
            out["prior"] = self.prior.to_json()
        if self.sources:
            out["effective_space"] = self.effective_space
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FittedTransfer:
        """Read a stored record (a ``"prior": null`` of older records reads as None)."""
        region = data.get("region")
        prior = data.get("prior")
        return cls(
            version=int(data.get("version", 1)),
            method=str(data["method"]),
            top_k=int(data["top_k"]),
            fitted_at=datetime.fromisoformat(data["fitted_at"]),
            sources=tuple(data.get("sources") or ()),
            rejected_sources=tuple(
                RejectedSource(str(r["study_id"]), str(r["reason"]))
                for r in data.get("rejected_sources") or ()
            ),
            region=region_from_json(region) if region else None,
            fit=data.get("fit"),
            seeds=tuple(data.get("seeds") or ()),
            reason=data.get("reason"),
            prior=SourcePrior.from_json(prior) if prior else None,
            effective_space=data.get("effective_space"),
        )
