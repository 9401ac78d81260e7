"""A source-informed GP prior (HyperBO-style): the lengthscales the earlier tasks show.

Why: after the seeds, the GP inside a region starts from a handful of target points and a
prior sized for the whole cube (a lengthscale of one width), so it spends evaluations
relearning how fast the objective changes in the region, although every source already
shows it. HyperBO (Wang et al. 2022) learns the GP prior from the source tasks; here the
same is done for the lengthscales, in the region's own coordinates:

1. ``source_prior`` (once, when the study's region is fitted): every source's completed
   trials, mapped into the target space, are put in the coordinates of the region's
   bounding box (``[0, 1]`` across the box). The rows inside the box grown by ``reach``
   (at least ``min_rows``, the nearest to the box) are fitted by the engine's own MAP fit
   (injected as ``fit``; ``transfer`` may not import the engine), the source standardised
   on its own. The per-dimension median of the sources' log inverse squared lengthscales
   is the prior's centre, the sources' spread (a robust standard deviation, within
   ``[sigma_floor, sigma_cap]``) its width. Both are stored in cube units with the
   study's fitted region, so the prior is computed once per study and every request (and
   a restart) reads the same numbers.
2. ``inner_prior`` (per request, arithmetic only): the inner GP is built for a narrowed
   space (the region, grown by the guard, or a trust region inside it), whose encoding is
   an affine image of the cube's on every numeric coordinate; a lengthscale in cube units
   divided by the narrowed width is the lengthscale the inner GP sees.

The prior is a fixed Gaussian on each log lengthscale (``engine.gp_model.LengthscalePrior``),
so the target's own likelihood, which grows with every trial, outweighs it as data arrive:
on a family whose tasks differ (the large-shift family) the target's data correct it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpo_service.domain import (
    CategoricalParameter,
    OrdinalParameter,
    Params,
    SearchSpace,
    SourcePrior,
    objective_value,
)
from hpo_service.domain.region import Box, Ellipsoid
from hpo_service.domain.transfer import SourceFit
from hpo_service.transfer.coords import (
    EncoderFactory,
    FloatArray,
    fill_inactive,
    region_coords,
    unconditional,
)
from hpo_service.transfer.select import SourceStudy, center_params, map_params, ranked

__all__ = ["FitHypers", "PriorOptions", "inner_frame", "inner_prior", "source_prior"]

FitHypers = Callable[[FloatArray, FloatArray], FloatArray]
"""MAP hyperparameters of a GP on ``n x d`` inputs and ``n`` standardised targets, with
the engine's default (unit-width) prior: ``d`` log inverse squared lengthscales, then the
log output scale and the log noise (the engine's ``Hyperparameters.vector``)."""

# The engine's bounds on log rho (lengthscales between 0.01 and 100 widths).
_LOG_RHO_LIMIT = math.log(1e4)


@dataclass(frozen=True)
class PriorOptions:
    """How the sources' lengthscales become a prior.

    Attributes:
        reach: a source's rows inside the region's bounding box grown by this factor
            (about its centre) are fitted: the lengthscale near the region is what the
            inner GP needs, not the whole cube's.
        min_rows: at least this many rows per source (the nearest to the box), so a
            source with few trials near a small region still gives a fit.
        min_sources: fewer usable sources give no prior (one task is no evidence).
        sigma_floor: the narrowest prior, on log rho (0.8: a factor of 1.5 either way on
            the lengthscale at one standard deviation), so a few target points can still
            correct a prior that all sources agree on.
        sigma_cap: the widest prior on log rho; wider disagreements are capped, since the
            default prior is no better informed.
        max_rows: at most this many rows per source (the nearest to the box, best
            first): the fit at creation, the stored record and the mean's cost per
            acquisition evaluation stay bounded for sources with thousands of trials.
        max_sources: at most this many sources (the first ones) enter the prior.
    """

    reach: float = 2.0
    min_rows: int = 8
    max_rows: int = 64
    max_sources: int = 16
    min_sources: int = 2
    sigma_floor: float = 0.8
    sigma_cap: float = 2.0


def source_prior(
    target: SearchSpace,
    sources: Sequence[SourceStudy],
    region: Box | Ellipsoid,
    make_encoder: EncoderFactory,
    fit: FitHypers,
    options: PriorOptions | None = None,
) -> SourcePrior | None:
    """The prior to store with the study, or None when too few sources can be fitted.

    Returns:
        The region's coordinate names, the centre and width on log rho in cube units per
        name, every source's fitted log rho (cube units), how many rows each fit used,
        the box the rows are expressed in (cube units), and per source its rows (box
        units, standardised values to maximise) with its fitted hyperparameters (box
        units; absent coordinates get the longest lengthscale), from which
        ``source_mean.source_gps`` rebuilds the sources' GPs for their posterior means.
    """
    opts = options or PriorOptions()
    flat = unconditional(target)
    encoder = make_encoder(flat)
    names = list(region.names)
    lo, hi = np.asarray(region.lower), np.asarray(region.upper)
    width = np.maximum(hi - lo, 1e-9)
    fill = center_params(target, region, make_encoder)
    per_source: list[list[float]] = []
    rows: list[int] = []
    fitted: list[SourceFit] = []
    for source in sources[: opts.max_sources]:
        z, y, present = _source_rows(target, source, region, encoder, fill)
        u, y = _near_region((z - lo) / width, y, opts)
        if len(y) < 3 or not present.any() or float(np.std(y)) <= 0.0:
            continue
        y = (y - y.mean()) / y.std()
        hypers = fit(u[:, present], y)
        log_rho = np.full(len(names), np.nan)
        log_rho[present] = hypers[:-2]
        # region units -> cube units: a lengthscale of l box widths is l * width cube units
        per_source.append((log_rho - 2.0 * np.log(width)).tolist())
        rows.append(len(y))
        fitted.append(
            SourceFit(
                u=np.where(np.isfinite(u), u, 0.5).tolist(),
                # to maximise, as the engine models every objective
                y=(-y).tolist(),
                log_rho=np.where(present, log_rho, -_LOG_RHO_LIMIT).tolist(),
                log_scale=float(hypers[-2]),
                log_noise=float(hypers[-1]),
            )
        )
    if len(per_source) < opts.min_sources:
        return None
    table = np.asarray(per_source)
    centre, sigma = [], []
    for j in range(len(names)):
        col = table[:, j][np.isfinite(table[:, j])]
        if len(col) < opts.min_sources:
            centre.append(math.nan)
            sigma.append(math.nan)
            continue
        med = float(np.median(col))
        spread = 1.4826 * float(np.median(np.abs(col - med)))
        centre.append(med)
        sigma.append(min(opts.sigma_cap, max(opts.sigma_floor, spread)))
    return SourcePrior(
        names=names,
        log_rho=centre,
        sigma=sigma,
        per_source=per_source,
        rows=rows,
        lower=lo.tolist(),
        width=width.tolist(),
        sources=tuple(fitted),
    )


def _source_rows(
    target: SearchSpace,
    source: SourceStudy,
    region: Box | Ellipsoid,
    encoder: Any,
    fill: Params,
) -> tuple[FloatArray, FloatArray, np.ndarray]:
    """A source's completed trials in region coordinates, values to minimise, present columns."""
    names = list(region.names)
    present = np.array([n in source.space.names for n in names], dtype=bool)
    zs, ys = [], []
    sign = source.objective.sign()
    for t in ranked(source):
        value = objective_value(source.objective, t.result)
        if value is None:
            continue
        params = map_params(target, t.params, fill)
        zs.append(region_coords(encoder, target, params, names))
        ys.append(sign * value)
    if not zs:
        return np.zeros((0, len(names))), np.zeros(0), present
    return fill_inactive(np.vstack(zs), region), np.asarray(ys, dtype=np.float64), present


def _near_region(u: FloatArray, y: FloatArray, opts: PriorOptions) -> tuple[FloatArray, FloatArray]:
    """Rows within the box grown by ``reach``, at least ``min_rows``, at most ``max_rows``.

    Nearest to the box first; among equally near rows (inside it), the given order (best
    first) decides.
    """
    if len(y) == 0:
        return u, y
    outside = np.maximum(np.maximum(-u, u - 1.0), 0.0).max(axis=1)
    order = np.argsort(outside, kind="stable")
    n = max(int((outside <= (opts.reach - 1.0) / 2).sum()), min(opts.min_rows, len(y)))
    n = min(n, opts.max_rows)
    keep = np.sort(order[:n])
    return u[keep], y[keep]


@dataclass(frozen=True)
class InnerFrame:
    """Where the inner designer's encoded columns sit in the cube, per region name.

    Attributes:
        column: the inner encoded column of each region name it keeps (numeric only).
        origin: the cube coordinate of the inner column's 0.
        scale: cube units per inner unit (the narrowed width; its encoding is affine).
        dim: width of the inner encoded vector.
    """

    column: dict[str, int]
    origin: dict[str, float]
    scale: dict[str, float]
    dim: int


def inner_frame(
    names: Sequence[str], space: SearchSpace, inner_space: SearchSpace, make_encoder: EncoderFactory
) -> InnerFrame:
    """The affine map from cube coordinates to the inner designer's, per region name.

    Every numeric encoding is affine in the parameter's (log) value, on both spaces, so
    two values of the narrowed parameter fix the map; a parameter narrowed to one value
    (a constant column) is left out.
    """
    full = make_encoder(unconditional(space))
    inner = make_encoder(unconditional(inner_space))
    template = inner.decode(np.full(inner.dim, 0.5))
    start = {c.name: c.start for c in inner.columns}
    full_start = {c.name: c.start for c in full.columns}
    column, origin, scale = {}, {}, {}
    for name in names:
        if name not in start:
            continue
        p = inner_space.get(name)
        if isinstance(p, CategoricalParameter):
            continue
        ends = (p.values[0], p.values[-1]) if isinstance(p, OrdinalParameter) else (p.low, p.high)
        if ends[0] == ends[1]:
            continue
        a, b = ({**template, name: v} for v in ends)
        ia, ib = float(inner.encode(a)[start[name]]), float(inner.encode(b)[start[name]])
        fa, fb = float(full.encode(a)[full_start[name]]), float(full.encode(b)[full_start[name]])
        if ib - ia <= 0.0 or fb - fa <= 0.0:
            continue
        column[name] = start[name]
        scale[name] = (fb - fa) / (ib - ia)
        origin[name] = fa - ia * scale[name]
    return InnerFrame(column, origin, scale, inner.dim)


def inner_prior(record: SourcePrior, frame: InnerFrame) -> tuple[list[float], list[float]] | None:
    """The stored prior in the inner designer's encoded columns (NaN: no prior there).

    Args:
        record: what ``source_prior`` returned (stored with the study).
        frame: ``inner_frame`` of the record's names for the narrowed space the inner
            designer is built for (shared with ``source_mean.source_gps``).

    Returns:
        per encoded column of the narrowed space, the centre and width on log rho; None
        when no column has a prior.
    """
    centre = [math.nan] * frame.dim
    sigma = [math.nan] * frame.dim
    found = False
    for name, log_rho, s in zip(record.names, record.log_rho, record.sigma, strict=True):
        if name not in frame.column or log_rho is None or not math.isfinite(log_rho):
            continue
        # one inner unit is `scale` cube units: rho scales with the width squared
        value = float(log_rho) + 2.0 * math.log(frame.scale[name])
        centre[frame.column[name]] = min(_LOG_RHO_LIMIT, max(-_LOG_RHO_LIMIT, value))
        sigma[frame.column[name]] = float(s)
        found = True
    return (centre, sigma) if found else None
