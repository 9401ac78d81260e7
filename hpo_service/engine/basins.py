"""Converged basins: found by replaying a study's history, then left for the next one.

A GP with expected improvement that has found a good basin refines it for the rest of
the study: the basin's many close points give the model long lengthscales along the
directions the basin ignores, and every other region's improvement looks negligible.
On Hartmann-6 ``gp`` ended 16 of 46 runs in the second-best basin that way (issue #18).
TuRBO's answer is a restart: when a trust region has converged, the search starts
afresh elsewhere. The designers here are rebuilt per request, so the restarts are
rediscovered on every request by replaying the history in trial order:

- The *incumbent* is the best value among the rows outside every basin set aside so far.
  An improvement counts when it beats the incumbent by more than ``tolerance`` times the
  range of the values seen up to that row.
- When ``patience`` rows in a row bring no such improvement and at least half of them lie
  near the incumbent (the search is polishing it, not exploring), the incumbent's
  neighbourhood becomes a *basin*. The incumbent restarts as the best row outside every
  basin; later rows inside a basin (pending work proposed before it was set aside) are
  ignored by the replay.

After that the GP designer (when ``GPOptions.basins`` is set) leaves the rows inside a
basin's ball out of its training data and pushes the acquisition function out of every
basin (``outside_basins``): the union of a Euclidean ball (``radius`` times the square
root of the dimension, in encoded coordinates) and the ellipsoid of ``reach`` model
lengthscales around its centre. A basin is long along the directions its value ignores
(Hartmann-6's second basin spans the cube along two of them), which the lengthscales say
and a ball does not: with a small ball only (0.245 in 6 dimensions), every proposal after
the restart on Hartmann-6 seed 0 slid along such a direction to the ball's rim, still in
the same basin. With the ellipsoid, the proposals do leave, but in the 16 evaluations
left on that seed they went to the cube's corners (the model's variance is largest
there) and found nothing better, whether the basin's rows were kept or set aside: a
restart needs more evaluations than a 60-evaluation Hartmann-6 study has after the
stall, or a better idea of where to go next.

The replay at row ``i`` only uses rows up to ``i`` (the value range included), so a basin
found on one request is found again on every later one: the history alone is the state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from hpo_service.engine.encoding import FloatArray

__all__ = ["Basin", "BasinOptions", "find_basins", "inside_basins", "outside_basins"]

# Log-acquisition units subtracted per unit of depth into a basin (depth 1 at its centre):
# far below any log-EI value a real candidate has, and with a gradient pointing outward.
_PENALTY = 1e3


@dataclass(frozen=True)
class BasinOptions:
    """When a basin counts as converged, and how much of the space it covers.

    Attributes:
        patience: rows without an improvement before the incumbent's basin is set aside;
            None: ``d + 4`` within ``[8, 20]`` for ``d`` encoded columns (as long as the
            initial design, so a basin is left after about as many evaluations as it
            took to find one).
        tolerance: an improvement smaller than this fraction of the observed value
            range is polishing, not progress.
        radius: the basin's Euclidean radius per square root of the encoded dimension
            (0.2: 0.49 in a 6-dimensional cube); also how near a row must be to the
            incumbent to count as polishing it.
        reach: the basin's extent in model lengthscales along each column (2: where
            a Matérn-5/2 correlation with the centre is still above 0.14).
    """

    patience: int | None = None
    tolerance: float = 1e-3
    radius: float = 0.2
    reach: float = 2.0

    def patience_for(self, dim: int) -> int:
        """The patience for ``dim`` encoded columns."""
        return self.patience if self.patience is not None else min(20, max(8, dim + 4))


@dataclass(frozen=True)
class Basin:
    """A converged neighbourhood: centre (encoded), radius, and the best value in it.

    Attributes:
        centre: length-``d`` encoded point, the incumbent when the basin was set aside.
        radius: Euclidean radius in encoded coordinates.
        value: the incumbent's value (to maximise).
        found_at: the number of rows replayed when it was set aside.
    """

    centre: FloatArray
    radius: float
    value: float
    found_at: int


def inside_basins(x: FloatArray, basins: list[Basin]) -> npt.NDArray[np.bool_]:
    """Mask of the rows of ``x`` (``n x d``) inside any of ``basins``."""
    inside = np.zeros(len(x), dtype=bool)
    for basin in basins:
        inside |= np.linalg.norm(x - basin.centre, axis=-1) < basin.radius
    return inside


def find_basins(
    x: FloatArray,
    y: FloatArray,
    *,
    start: int,
    options: BasinOptions | None = None,
) -> list[Basin]:
    """Replay the rows in order and return the basins set aside along the way.

    Args:
        x: ``n x d`` encoded rows in trial order.
        y: length-``n`` values to maximise; NaN for rows that count as time passing but
            never as an improvement (infeasible or failed runs).
        start: rows before this (the initial design) never trigger a basin.
        options: patience, tolerance and radius; None: the defaults.
    """
    opts = options or BasinOptions()
    patience = opts.patience_for(x.shape[1] if x.ndim == 2 else 0)
    radius = opts.radius * math.sqrt(max(1, x.shape[1] if x.ndim == 2 else 1))
    basins: list[Basin] = []
    best, best_row = -math.inf, -1
    stale: list[int] = []  # rows since the incumbent last improved materially
    lo, hi = math.inf, -math.inf
    for i in range(len(y)):
        value = float(y[i])
        if math.isfinite(value):
            lo, hi = min(lo, value), max(hi, value)
        if basins and inside_basins(x[i : i + 1], basins)[0]:
            continue
        if math.isfinite(value) and (best_row < 0 or value > best + opts.tolerance * (hi - lo)):
            best, best_row, stale = value, i, []
            continue
        if math.isfinite(value) and value > best:
            best, best_row = value, i
        stale.append(i)
        if i < start or best_row < 0 or not _polishing(x, stale, best_row, radius, patience):
            continue
        basins.append(Basin(x[best_row].copy(), radius, best, i + 1))
        best, best_row = _best_outside(x[: i + 1], y[: i + 1], basins)
        stale = []
    return basins


def _polishing(
    x: FloatArray, stale: list[int], best_row: int, radius: float, patience: int
) -> bool:
    """Whether the last ``patience`` rows without gains are mostly near the incumbent.

    Rows far from the incumbent without gains are exploration, not convergence: the
    incumbent's neighbourhood has not been searched yet and is not set aside.
    """
    if len(stale) < patience:
        return False
    recent = stale[-patience:]
    near = np.linalg.norm(x[recent] - x[best_row], axis=-1) < radius
    return bool(2 * near.sum() >= len(recent))


def _best_outside(x: FloatArray, y: FloatArray, basins: list[Basin]) -> tuple[float, int]:
    """The best finite value outside ``basins`` and its row; ``(-inf, -1)`` if none."""
    candidates = np.where(np.isfinite(y) & ~inside_basins(x, basins), y, -np.inf)
    if not np.isfinite(candidates).any():
        return -math.inf, -1
    row = int(np.argmax(candidates))
    return float(candidates[row]), row


def outside_basins(
    acqf: Callable[[torch.Tensor], torch.Tensor],
    basins: list[Basin],
    lengthscales: FloatArray,
    reach: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``acqf`` minus a penalty that grows linearly with the depth into any basin.

    Args:
        acqf: maps a ``b x q x d`` tensor of q-batches to ``b`` (log) acquisition values.
        basins: the basins set aside; every point of a batch inside one is penalised.
        lengthscales: length-``d`` model lengthscales (encoded columns).
        reach: a basin's extent in lengthscales (``BasinOptions.reach``).
    """
    if not basins:
        return acqf

    def penalised(x: torch.Tensor) -> torch.Tensor:
        value = acqf(x)
        scale = torch.as_tensor(lengthscales, dtype=x.dtype, device=x.device) * reach
        for basin in basins:
            offset = x - torch.as_tensor(basin.centre, dtype=x.dtype, device=x.device)
            ball = 1.0 - torch.linalg.norm(offset, dim=-1) / basin.radius
            ellipsoid = 1.0 - torch.linalg.norm(offset / scale, dim=-1)
            depth = torch.clamp(torch.maximum(ball, ellipsoid), min=0)
            value = value - _PENALTY * depth.sum(dim=-1)
        return value

    return penalised
