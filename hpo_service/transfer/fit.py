"""Fitting a region to the winners of earlier tasks, in the encoded unit cube.

Winners are the top-k completed trials of each source task, already mapped into the new
study's encoded space (``select.collect_winners``). From them:

- ``box``: coordinate-wise min/max widened by a margin, with a minimum width (at least one
  grid step for int/ordinal) so a coordinate where every winner agrees does not collapse.
- ``quantile_box``: the same from per-coordinate quantiles, robust to a few outliers.
- ``ellipsoid``: the minimum-volume enclosing ellipsoid (Khachiyan's algorithm) of the
  winners, grown by the margin and regularised by a floor on its semi-axes. It is flat
  unless the points affinely span the space, so rank-deficient winners fall back to the
  box. The slack variant first drops outlying points and whole outlying tasks (a robust
  Mahalanobis screen), because one far-away task would otherwise blow the ellipsoid up.
- Categorical parameters keep the choices seen among the winners, or all of them when
  fewer than ``min_tasks`` tasks contributed.

Coordinates may be missing (NaN) for a winner: the parameter is inactive there, or the
source does not have it. Such coordinates are fitted from the winners that have them and
are never ellipsoid axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2

from hpo_service.domain.region import Box, Ellipsoid, ellipsoid_from

__all__ = [
    "FitMethod",
    "FitOptions",
    "FitResult",
    "Winners",
    "fit_box",
    "fit_ellipsoid",
    "fit_region",
    "khachiyan",
]

FloatArray = npt.NDArray[np.float64]
FitMethod = Literal["box", "quantile_box", "ellipsoid"]


@dataclass(frozen=True)
class Winners:
    """The points a region is fitted to.

    Attributes:
        names: numeric coordinate names, in the new space's order.
        z: ``n x len(names)`` encoded coordinates; NaN where a winner lacks the value.
        task: length-``n`` index of the source task each winner comes from.
        min_width: length-``len(names)`` smallest allowed width per coordinate.
        axis_ok: length-``len(names)``: whether a coordinate may be an ellipsoid axis
            (unconditional parameters only).
        categorical: per categorical parameter, the winners' choices (None: missing).
        categorical_choices: per categorical parameter, every choice of the new space.
    """

    names: list[str]
    z: FloatArray
    task: npt.NDArray[np.int64]
    min_width: FloatArray
    axis_ok: list[bool]
    categorical: dict[str, list[str | None]] = field(default_factory=dict)
    categorical_choices: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        """Number of distinct source tasks among the winners."""
        return len(set(self.task.tolist()))


@dataclass(frozen=True)
class FitOptions:
    """Knobs of the fit; the defaults are what the service uses.

    Attributes:
        margin: each side widened by this fraction of the width (ellipsoid: semi-axes
            grown by ``1 + margin``).
        quantile: tail share cut on each side by ``quantile_box``.
        slack: whether ``ellipsoid`` drops outliers before fitting.
        slack_max_fraction: at most this share of the winners is ever dropped.
        min_tasks: categorical subsets need winners from at least this many tasks.
        rank_tol: relative singular value under which winners count as rank-deficient.
    """

    margin: float = 0.1
    quantile: float = 0.1
    slack: bool = True
    slack_max_fraction: float = 0.3
    min_tasks: int = 2
    rank_tol: float = 1e-6


@dataclass(frozen=True)
class FitResult:
    """A fitted region and the facts a user needs to trust it.

    Attributes:
        region: the region.
        method: the method asked for.
        notes: ``fallback`` (why a box replaced the ellipsoid, or None), ``dropped``
            (winners removed as outliers), ``n_points``, ``n_tasks``.
    """

    region: Box | Ellipsoid
    method: str
    notes: dict[str, Any]


def khachiyan(
    points: FloatArray, *, eps: float = 1e-3, max_iter: int = 5_000
) -> tuple[FloatArray, FloatArray]:
    """Minimum-volume enclosing ellipsoid of ``points`` (``n x k``, affinely spanning).

    Khachiyan's barycentric coordinate ascent on the lifted points ``(p, 1)``: the weights
    ``u`` converge to the optimal design; the ellipsoid is
    ``{x : (x - c)ᵀ A (x - c) <= 1}`` with ``c = P u`` and
    ``A = (P diag(u) Pᵀ - c cᵀ)⁻¹ / k``. It stops once no point lies more than ``eps``
    (relative) outside the current design's ellipsoid, then scales ``A`` so every point
    is enclosed exactly: within ``(1 + eps)`` of the optimal volume, in few iterations.

    Returns:
        ``(c, A)``: the ``k`` centre and the ``k x k`` shape matrix.
    """
    n, k = points.shape
    q = np.vstack([points.T, np.ones(n)])  # (k + 1) x n
    u = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        x = (q * u) @ q.T
        m = np.einsum("in,in->n", q, np.linalg.solve(x, q))
        j = int(np.argmax(m))
        if m[j] <= (k + 1.0) * (1.0 + eps):
            break
        step = (m[j] - k - 1.0) / ((k + 1.0) * (m[j] - 1.0))
        u = (1.0 - step) * u
        u[j] += step
    c = points.T @ u
    cov = (points.T * u) @ points - np.outer(c, c)
    a = np.linalg.inv(cov) / k
    d = points - c
    worst = float(np.einsum("ni,ij,nj->n", d, a, d).max())
    a = a / max(worst, 1e-12)
    return c, (a + a.T) / 2


def fit_region(winners: Winners, method: FitMethod, options: FitOptions | None = None) -> FitResult:
    """Fit ``method`` to ``winners`` (see the module docstring)."""
    options = options or FitOptions()
    if method == "ellipsoid":
        return fit_ellipsoid(winners, options)
    return fit_box(winners, options, quantile=method == "quantile_box")


def fit_box(winners: Winners, options: FitOptions, *, quantile: bool = False) -> FitResult:
    """Box from min/max (or quantiles) per coordinate, widened and floored."""
    lo = np.zeros(len(winners.names))
    hi = np.ones(len(winners.names))
    for j in range(len(winners.names)):
        col = winners.z[:, j]
        col = col[np.isfinite(col)]
        if len(col) == 0:
            continue  # no winner has it: leave the coordinate unconstrained
        if quantile and len(col) > 2:
            a, b = np.quantile(col, [options.quantile, 1.0 - options.quantile])
        else:
            a, b = col.min(), col.max()
        lo[j], hi[j] = _widen(float(a), float(b), options.margin, float(winners.min_width[j]))
    region = Box(
        names=list(winners.names),
        lower=lo.tolist(),
        upper=hi.tolist(),
        **_categorical(winners, options),
    )
    notes = {"fallback": None, "dropped": 0, **_counts(winners)}
    return FitResult(region, "quantile_box" if quantile else "box", notes)


def fit_ellipsoid(winners: Winners, options: FitOptions) -> FitResult:
    """Regularised minimum-volume ellipsoid; a box when the winners are rank-deficient."""
    axes = [
        j
        for j in range(len(winners.names))
        if winners.axis_ok[j] and np.all(np.isfinite(winners.z[:, j]))
    ]
    if not axes:
        return _fallback(winners, options, "no coordinate is shared by every winner")
    pts = winners.z[:, axes]
    keep = _inliers(pts, winners.task, options) if options.slack else np.ones(len(pts), bool)
    dropped = int((~keep).sum())
    pts = pts[keep]
    k = len(axes)
    if len(pts) < k + 1:
        return _fallback(winners, options, f"{len(pts)} points cannot span {k} dimensions")
    centred = pts - pts.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    if sv[-1] <= options.rank_tol * max(1.0, float(sv[0])):
        return _fallback(winners, options, "winners are rank-deficient (flat ellipsoid)")
    c, a = khachiyan(pts)
    floor = _semi_axis_floor(winners.min_width[axes])
    a = _regularise(a, 1.0 + options.margin, floor)
    kept_z = winners.z[keep]
    box = fit_box(
        Winners(
            names=winners.names,
            z=kept_z,
            task=winners.task[keep],
            min_width=winners.min_width,
            axis_ok=winners.axis_ok,
        ),
        options,
    ).region
    region = ellipsoid_from(
        names=list(winners.names),
        axes=[winners.names[j] for j in axes],
        center=c,
        matrix=a,
        lower=np.asarray(box.lower),
        upper=np.asarray(box.upper),
        **_categorical(winners, options),
    )
    notes = {"fallback": None, "dropped": dropped, **_counts(winners)}
    return FitResult(region, "ellipsoid", notes)


# -- pieces ----------------------------------------------------------------------------


def _widen(a: float, b: float, margin: float, min_width: float) -> tuple[float, float]:
    """Grow ``[a, b]`` by ``margin`` per side, to at least ``min_width``, inside ``[0, 1]``."""
    w = b - a
    a, b = a - margin * w, b + margin * w
    if b - a < min_width:
        mid = (a + b) / 2
        a, b = mid - min_width / 2, mid + min_width / 2
    if a < 0.0:
        a, b = 0.0, min(1.0, b - a)
    if b > 1.0:
        a, b = max(0.0, a - (b - 1.0)), 1.0
    return a, b


def _semi_axis_floor(min_width: FloatArray) -> float:
    return float(max(min_width.max(), 1e-3)) / 2.0


def _regularise(a: FloatArray, grow: float, floor: float) -> FloatArray:
    """Semi-axes multiplied by ``grow`` and floored at ``floor``; same orientation."""
    eig, vec = np.linalg.eigh(a)
    semi = np.maximum(grow / np.sqrt(np.maximum(eig, 1e-300)), floor)
    out: FloatArray = (vec / semi**2) @ vec.T
    return (out + out.T) / 2


def _inliers(
    pts: FloatArray, task: npt.NDArray[np.int64], options: FitOptions
) -> npt.NDArray[np.bool_]:
    """Mask of winners to keep after a robust Mahalanobis screen.

    One reweighting step of a minimum-covariance-determinant estimate: the half of the
    points nearest the coordinate-wise median give a centre and covariance (ridge added,
    rescaled for consistency); points beyond the 99.9% chi-square radius are outliers,
    and a task with most of its points outlying is dropped whole. Never more than
    ``slack_max_fraction`` of the points go, the farthest first.

    The covariance has a floor: the robust spread of the tasks' centroids (squared MAD
    per coordinate, over at least three tasks). Winners of converged sources (BO
    histories) sit in tight clusters, one per task; their within-cluster covariance alone
    made every task but the central ones look like an outlier, and the ellipsoid kept
    the target's optimum in 3 of 10 runs. Spread *between* tasks is what the region must
    cover, and a median over tasks still leaves one far-away task outlying.
    """
    n, k = pts.shape
    if n < 2 * (k + 1):
        return np.ones(n, dtype=bool)
    med = np.median(pts, axis=0)
    mad = 1.4826 * np.median(np.abs(pts - med), axis=0)
    r = np.linalg.norm((pts - med) / np.maximum(mad, 1e-3), axis=1)
    h = max(k + 1, math.ceil((n + k + 1) / 2))
    core = pts[np.argsort(r)[:h]]
    mu = core.mean(axis=0)
    cov = np.cov(core.T).reshape(k, k) + np.eye(k) * 1e-4
    tasks = np.unique(task)
    if len(tasks) >= 3:
        centroids = np.stack([pts[task == t].mean(axis=0) for t in tasks])
        spread = 1.4826 * np.median(np.abs(centroids - np.median(centroids, axis=0)), axis=0)
        cov = cov + np.diag(spread**2)
    d = pts - mu
    d2 = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    d2 = d2 * chi2.ppf(0.5, k) / max(float(np.median(d2)), 1e-12)
    out = d2 > chi2.ppf(0.999, k)
    for t in tasks:
        mine = task == t
        if out[mine].mean() > 0.5:
            out |= mine
    limit = int(options.slack_max_fraction * n)
    if out.sum() > limit:
        order = np.argsort(-d2)
        out = np.zeros(n, dtype=bool)
        out[order[:limit]] = True
    return np.asarray(~out, dtype=bool)


def _categorical(winners: Winners, options: FitOptions) -> dict[str, Any]:
    subsets: dict[str, list[str]] = {}
    for name, values in winners.categorical.items():
        seen = [(v, t) for v, t in zip(values, winners.task.tolist(), strict=True) if v is not None]
        if len({t for _, t in seen}) < options.min_tasks:
            continue
        choices = winners.categorical_choices[name]
        kept = [c for c in choices if any(v == c for v, _ in seen)]
        if kept and len(kept) < len(choices):
            subsets[name] = kept
    return {
        "categorical_subsets": subsets,
        "categorical_choices": dict(winners.categorical_choices),
    }


def _counts(winners: Winners) -> dict[str, int]:
    return {"n_points": len(winners.z), "n_tasks": winners.n_tasks}


def _fallback(winners: Winners, options: FitOptions, reason: str) -> FitResult:
    result = fit_box(winners, options)
    return FitResult(result.region, "ellipsoid", {**result.notes, "fallback": reason})
