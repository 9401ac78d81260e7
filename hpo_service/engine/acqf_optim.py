"""Maximising an acquisition function over the encoded points of a mixed search space.

BoTorch's ``optimize_acqf`` relaxes every column to the cube and rounds at the end; on
mixed spaces that scores points that can never be run and rounds away the optimum, and
its default start points ignore the data. This optimiser (the approach Optuna's
GPSampler takes, implemented here with BoTorch acquisition functions):

1. scores a scrambled Sobol sample of valid points together with perturbations of the
   best observed points (local refinement is where most of the late gains are);
2. starts from the best raw point and a Boltzmann draw of the others (diverse but good);
3. alternates L-BFGS-B over the continuous columns, preconditioned by the model's
   lengthscales so every direction has a similar curvature, with an exhaustive sweep over
   the choices of each categorical and small integer/ordinal parameter;
4. only ever evaluates projected points, so what it scores is exactly what is proposed.

q-batches (``q > 1``) are optimised jointly: start batches are drawn from the best
single points, then all ``q`` points move together under the joint acquisition value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from scipy.optimize import minimize
from scipy.stats import qmc

from hpo_service.domain import CategoricalParameter, FloatParameter
from hpo_service.engine.device import DTYPE, device, to_numpy
from hpo_service.engine.encoding import SpaceEncoder

__all__ = ["AcqfOptions", "Maximized", "MixedGeometry", "maximize_acqf"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
AcqfFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps a ``b x q x d`` tensor of q-batches to the ``b`` acquisition values."""

_EVAL_CHUNK = 1024


@dataclass(frozen=True)
class AcqfOptions:
    """How much work the optimiser does; the defaults are sized for one request.

    Attributes:
        raw_samples: Sobol points scored before any local search.
        n_restarts: local searches run (jointly) from the best raw points.
        maxiter: L-BFGS-B iterations per round of local search.
        perturbations: points drawn around the anchors (best observed points).
        rounds: alternations of continuous and discrete local search.
        independent: run one L-BFGS-B per restart instead of one over their sum.
        spread: for single points, draw the restarts other than the two best (overall and
            near the incumbent) from the Sobol points with probability proportional to
            the acquisition value itself, instead of Boltzmann weights over all points.
            Both are off by default: with closed-form log EI on Hartmann-6 they found
            the acquisition's maxima more exactly, and those sat on the boundary of the
            cube more often (mean regret at 60 evaluations 0.2 against 0.08).
        staged: run the joint local search in stages that keep the better half of the
            restarts (``_staged_lbfgs``); off, all restarts run to the end together.
    """

    raw_samples: int = 1024
    n_restarts: int = 8
    maxiter: int = 100
    perturbations: int = 256
    rounds: int = 3
    independent: bool = False
    spread: bool = False
    staged: bool = True


@dataclass(frozen=True)
class MixedGeometry:
    """Which encoded columns move continuously and which take one of few values.

    Attributes:
        dim: number of encoded columns.
        free: columns optimised by gradient (floats and large integer grids).
        discrete: per enumerable parameter, its columns and the ``k x len(columns)``
            matrix of its valid encodings (one-hot rows for a categorical).
    """

    dim: int
    free: IntArray
    discrete: tuple[tuple[IntArray, FloatArray], ...]

    @classmethod
    def from_encoder(cls, encoder: SpaceEncoder, max_enumerated: int = 16) -> MixedGeometry:
        """Classify every parameter of ``encoder``'s space."""
        free: list[int] = []
        discrete: list[tuple[IntArray, FloatArray]] = []
        for p, col in zip(encoder.space.parameters, encoder.columns, strict=True):
            cols = np.arange(col.start, col.stop, dtype=np.int64)
            if isinstance(p, CategoricalParameter):
                discrete.append((cols, np.eye(len(cols), dtype=np.float64)))
                continue
            grid = None if isinstance(p, FloatParameter) else encoder.grid(p.name)
            if grid is not None and len(grid) <= max_enumerated:
                discrete.append((cols, grid[:, None]))
            else:
                free.append(col.start)
        return cls(encoder.dim, np.array(free, dtype=np.int64), tuple(discrete))


@dataclass(frozen=True)
class Maximized:
    """The optimiser's result.

    Attributes:
        batches: ``r x q x d`` local optima, best first.
        values: the ``r`` acquisition values of ``batches``.
        ranked: ``N x d`` single points (raw and optimised), best single value first;
            designers take replacements from here when a proposal repeats a known point.
    """

    batches: FloatArray
    values: FloatArray
    ranked: FloatArray


def evaluate(acqf: AcqfFn, xs: FloatArray) -> FloatArray:
    """Acquisition values of ``b x q x d`` batches, without gradients, in chunks."""
    out: list[FloatArray] = []
    with torch.no_grad():
        for i in range(0, len(xs), _EVAL_CHUNK):
            chunk = torch.as_tensor(xs[i : i + _EVAL_CHUNK], dtype=DTYPE, device=device())
            out.append(to_numpy(acqf(chunk)).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0)


def maximize_acqf(
    acqf: AcqfFn,
    geometry: MixedGeometry,
    project: Callable[[FloatArray], FloatArray],
    q: int,
    *,
    rng: np.random.Generator,
    anchors: FloatArray,
    lengthscales: FloatArray,
    options: AcqfOptions | None = None,
) -> Maximized:
    """Find ``q`` points of high joint acquisition value.

    Args:
        acqf: the acquisition function (``b x q x d`` → ``b``).
        geometry: how each column may move.
        project: maps ``n x d`` cube points to valid encodings (``SpaceEncoder.project``).
        q: batch size.
        rng: seeds every random choice made here.
        anchors: ``k x d`` good points (the best observed) to search around.
        lengthscales: length-``d`` model lengthscales, for preconditioning and for the
            size of perturbations.
        options: effort settings.
    """
    opts = options or AcqfOptions()
    raw = _raw_points(geometry, project, rng, anchors, lengthscales, opts)
    single = evaluate(acqf, raw[:, None, :])
    order = np.argsort(-single, kind="stable")
    ranked = raw[order]
    if q == 1 and opts.spread:
        chosen = _spread_starts(single, opts.raw_samples, opts.n_restarts, rng)
        xs, vals = raw[chosen][:, None, :].copy(), single[chosen].copy()
    else:
        if q == 1:
            starts, start_vals = ranked[:, None, :], single[order]
        else:
            starts = _batch_starts(ranked, single[order], q, rng, 4 * opts.n_restarts)
            start_vals = evaluate(acqf, starts)
        chosen = _choose_starts(start_vals, opts.n_restarts, rng)
        xs, vals = starts[chosen].copy(), start_vals[chosen].copy()
    scale = np.clip(lengthscales, 1e-2, 1e2)
    for _ in range(opts.rounds):
        xs, vals = _continuous_step(
            acqf,
            geometry,
            project,
            xs,
            vals,
            scale,
            opts.maxiter,
            independent=opts.independent,
            staged=opts.staged,
        )
        xs, vals, changed = _discrete_step(acqf, geometry, project, xs, vals)
        if not changed:
            break
    best = np.argsort(-vals, kind="stable")
    return Maximized(xs[best], vals[best], np.vstack([xs[best].reshape(-1, geometry.dim), ranked]))


def _raw_points(
    geometry: MixedGeometry,
    project: Callable[[FloatArray], FloatArray],
    rng: np.random.Generator,
    anchors: FloatArray,
    lengthscales: FloatArray,
    opts: AcqfOptions,
) -> FloatArray:
    """Sobol points plus perturbed anchors, all projected onto valid encodings."""
    sobol = qmc.Sobol(d=geometry.dim, scramble=True, seed=int(rng.integers(2**31)))
    parts = [np.asarray(sobol.random(opts.raw_samples), dtype=np.float64)]
    if len(anchors) and opts.perturbations:
        base = anchors[rng.integers(len(anchors), size=opts.perturbations)]
        # Step sizes log-uniform between 0.5% and 20% of the cube (capped by the
        # lengthscale), so both fine refinement and short jumps are proposed.
        sigma = np.exp(rng.uniform(np.log(0.005), np.log(0.2), size=(opts.perturbations, 1)))
        noise = rng.normal(size=base.shape) * np.minimum(sigma, lengthscales[None, :])
        moved = base.copy()
        if len(geometry.free):
            moved[:, geometry.free] += noise[:, geometry.free]
        for cols, choices in geometry.discrete:
            flip = rng.random(len(moved)) < 1.0 / (1 + len(geometry.discrete))
            picks = choices[rng.integers(len(choices), size=int(flip.sum()))]
            moved[np.ix_(np.flatnonzero(flip), cols)] = picks
        parts += [np.clip(moved, 0.0, 1.0), anchors]
    return project(np.vstack(parts))


def _batch_starts(
    ranked: FloatArray, values: FloatArray, q: int, rng: np.random.Generator, n_sets: int
) -> FloatArray:
    """``n_sets x q x d`` start batches: the top ``q`` singles, then Boltzmann draws."""
    top = ranked[: max(q, len(ranked) // 8)]
    weights = _boltzmann(values[: len(top)])
    sets = [ranked[:q]]
    for _ in range(n_sets - 1):
        idx = rng.choice(len(top), size=q, replace=False, p=weights)
        sets.append(top[idx])
    return np.stack(sets)


def _boltzmann(values: FloatArray, eta: float = 2.0) -> FloatArray:
    finite = np.where(np.isfinite(values), values, np.nan)
    mu, sd = np.nanmean(finite), np.nanstd(finite)
    z = (np.nan_to_num(finite, nan=np.nanmin(finite)) - mu) / (sd if sd > 0 else 1.0)
    w = np.exp(eta * (z - z.max()))
    return np.asarray(w / w.sum(), dtype=np.float64)


def _spread_starts(values: FloatArray, n_sobol: int, n: int, rng: np.random.Generator) -> IntArray:
    """Restart indices: the best point, the best near the incumbent, then a spread draw.

    ``values`` are log-acquisition values; rows ``[0, n_sobol)`` are the space-filling
    sample and the rest lie around the best observed points. Drawing the remaining
    starts from the space-filling rows with weights ``exp(v - max v)`` (the acquisition
    value relative to the best, not a sharpened softmax) keeps starts in every region
    that still promises improvement (see ``AcqfOptions.spread`` for what it measured).
    """
    finite = np.where(np.isfinite(values), values, -np.inf)
    chosen = [int(np.argmax(finite))]
    if len(finite) > n_sobol:
        near = n_sobol + int(np.argmax(finite[n_sobol:]))
        if near not in chosen:
            chosen.append(near)
    sobol = finite[:n_sobol]
    if len(sobol) == 0 or not np.isfinite(sobol.max()):
        return np.array(chosen[:n], dtype=np.int64)
    weights = np.exp(sobol - sobol.max())
    weights[[c for c in chosen if c < n_sobol]] = 0.0
    k = min(n - len(chosen), int(np.count_nonzero(weights > 0)))
    if k > 0:
        picks = rng.choice(n_sobol, size=k, replace=False, p=weights / weights.sum())
        chosen += [int(i) for i in picks]
    return np.array(chosen, dtype=np.int64)


def _choose_starts(values: FloatArray, n: int, rng: np.random.Generator) -> IntArray:
    """The best value, then ``n - 1`` others drawn with Boltzmann weights."""
    best = int(np.argmax(values))
    if n <= 1 or len(values) <= 1:
        return np.array([best], dtype=np.int64)
    weights = _boltzmann(values)
    weights[best] = 0.0
    k = min(n - 1, int(np.count_nonzero(weights)))
    if k == 0:
        return np.array([best], dtype=np.int64)
    others = rng.choice(len(values), size=k, replace=False, p=weights / weights.sum())
    return np.concatenate([[best], others]).astype(np.int64)


def _continuous_step(
    acqf: AcqfFn,
    geometry: MixedGeometry,
    project: Callable[[FloatArray], FloatArray],
    xs: FloatArray,
    vals: FloatArray,
    scale: FloatArray,
    maxiter: int,
    *,
    independent: bool = False,
    staged: bool = False,
) -> tuple[FloatArray, FloatArray]:
    """L-BFGS-B over the free columns, then projection.

    The variables are ``x / lengthscale`` for the free columns: the acquisition varies
    on the scale of the lengthscales, so this makes its Hessian better conditioned.
    By default one run moves all restarts together (one acquisition call per step for
    all of them); with ``independent`` every restart is its own run with its own
    stopping test (more calls, each local maximum found exactly); with ``staged`` the
    joint run drops the worse half of the restarts after each fifth of the iterations
    (``_staged_lbfgs``). A batch keeps its old point unless the projected result is
    strictly better.
    """
    free = geometry.free
    if len(free) == 0 or maxiter <= 0:
        return xs, vals
    s = scale[free]
    moved = xs.copy()
    if independent:
        for i in range(len(xs)):
            moved[i : i + 1] = _lbfgs_free(acqf, xs[i : i + 1], free, s, maxiter)
    elif staged:
        moved = _staged_lbfgs(acqf, xs, free, s, maxiter)
    else:
        moved = _lbfgs_free(acqf, xs, free, s, maxiter)
    moved = project(np.clip(moved.reshape(-1, geometry.dim), 0.0, 1.0)).reshape(xs.shape)
    new_vals = evaluate(acqf, moved)
    better = new_vals > vals
    return np.where(better[:, None, None], moved, xs), np.where(better, new_vals, vals)


def _staged_lbfgs(
    acqf: AcqfFn, xs: FloatArray, free: IntArray, s: FloatArray, maxiter: int
) -> FloatArray:
    """Joint L-BFGS-B in stages of ``maxiter / 5`` iterations, halving the restarts.

    After each stage only the better half of the restarts (at least two) goes on; the
    last two get the iterations left. Only the best batch is proposed, and a restart far
    behind after a fifth of the budget rarely overtakes; meanwhile a joint run over all
    restarts is as slow as its slowest (at d = 12 with 8 restarts it often hit the
    iteration limit). Measured on Styblinski-Tang, d = 12, n = 300, 8 pending, three
    histories: the same best acquisition value to 4 decimals in 0.6x the time.
    """
    moved = xs.copy()
    active = np.arange(len(xs))
    left = maxiter
    step = max(1, maxiter // 5)
    while True:
        last = len(active) <= 2
        iters = left if last else min(step, left)
        moved[active] = _lbfgs_free(acqf, moved[active], free, s, iters)
        left -= iters
        if last or left <= 0:
            return moved
        vals = evaluate(acqf, moved[active])
        active = active[np.argsort(-vals, kind="stable")[: max(2, len(active) // 2)]]


def _lbfgs_free(
    acqf: AcqfFn, xs: FloatArray, free: IntArray, s: FloatArray, maxiter: int
) -> FloatArray:
    """One L-BFGS-B run maximising the summed acquisition of ``xs`` over ``free`` columns."""
    base = torch.as_tensor(xs, dtype=DTYPE, device=device())
    s_t = torch.as_tensor(s, dtype=DTYPE, device=device())
    free_t = torch.as_tensor(free, device=device())

    def loss_and_grad(z: FloatArray) -> tuple[float, FloatArray]:
        zt = torch.as_tensor(z.reshape(*xs.shape[:2], len(free)), dtype=DTYPE, device=device())
        zt.requires_grad_(True)
        with torch.enable_grad():
            x = base.clone()
            x[..., free_t] = zt * s_t
            loss = -acqf(x).sum()
            (grad,) = torch.autograd.grad(loss, zt)
        return float(loss.detach()), to_numpy(grad).reshape(-1)

    z0 = (xs[..., free] / s).reshape(-1)
    bounds = [(0.0, float(1.0 / si)) for si in s] * (xs.shape[0] * xs.shape[1])
    res = minimize(
        loss_and_grad,
        z0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        # ftol=0: on a sum over restarts a relative-decrease test stops while restarts far
        # from the incumbent (small values) still climb; alone, gtol decides.
        options={"maxiter": maxiter, "gtol": 1e-5, "ftol": 0.0},
    )
    out = xs.copy()
    out[..., free] = np.asarray(res.x, dtype=np.float64).reshape(*xs.shape[:2], len(free)) * s
    return out


def _discrete_step(
    acqf: AcqfFn,
    geometry: MixedGeometry,
    project: Callable[[FloatArray], FloatArray],
    xs: FloatArray,
    vals: FloatArray,
) -> tuple[FloatArray, FloatArray, bool]:
    """Coordinate sweep: each enumerable parameter of each point takes its best value.

    All batches are swept together (one acquisition call per parameter and batch
    position), which keeps the number of calls independent of the number of restarts.
    """
    changed = False
    xs, vals = xs.copy(), vals.copy()
    b, q, d = xs.shape
    for j in range(q):
        for cols, choices in geometry.discrete:
            k = len(choices)
            if k <= 1:
                continue
            trial = np.repeat(xs[:, None], k, axis=1)  # b x k x q x d
            block = trial[:, :, j, :]
            block[:, :, cols] = choices[None, :, :]
            trial[:, :, j, :] = block
            flat = project(trial.reshape(-1, d)).reshape(b, k, q, d)
            cand = evaluate(acqf, flat.reshape(b * k, q, d)).reshape(b, k)
            best = np.argmax(cand, axis=1)
            for i in range(b):
                if cand[i, best[i]] > vals[i] + 1e-12 and not np.array_equal(
                    flat[i, best[i]], xs[i]
                ):
                    xs[i], vals[i], changed = flat[i, best[i]], cand[i, best[i]], True
    return xs, vals, changed
