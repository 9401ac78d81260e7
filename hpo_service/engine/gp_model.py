"""Gaussian-process surrogate: a BoTorch ``SingleTaskGP`` with MAP-fitted hyperparameters.

Why not ``fit_gpytorch_mll`` with BoTorch's defaults: the baseline (PERF-BASELINE.md)
found the default fit 3-4x slower than Optuna's whole ask and its regret on Hartmann-6
ten times worse. Two things matter:

- **Priors that suit a unit cube and standardised outcomes.** Each inverse squared
  lengthscale ``rho`` gets the log-density ``-(0.1/rho + 0.1*rho)`` (peaked at a
  lengthscale of 1, the width of the cube, and light-tailed on both sides so a handful of
  points cannot collapse a lengthscale), the output scale a Gamma(2, 1) and the noise
  variance a Gamma(1.1, 30) above a floor of 1e-6, so deterministic objectives are
  interpolated while noisy ones can still explain scatter. These are the figures Optuna's
  GPSampler uses; the implementation here is our own.
- **A lean fit.** The MAP objective is computed directly from a dense Cholesky factor in
  torch and minimised with L-BFGS-B over log-parameters, starting from the previous
  request's optimum (a bounded, thread-safe module cache keyed by the study). With a
  warm start the fit needs a few iterations; a cold start from the cube-sized defaults is
  added when the data grew a lot since the cached fit, so a stale optimum cannot trap
  the model. From 500 usable rows on, the cached hyperparameters are reused until the
  history has grown by 5% (``REFIT_MIN_ROWS``, ``REFIT_GROWTH``): at that size one more
  trial moves them by little, and the fit is most of a request. The fitted values are
  then loaded into a ``SingleTaskGP`` (zero mean, ARD Matérn-5/2, ``Standardize``
  outcome transform) whose posterior BoTorch's acquisition functions use.

A transferred study may replace the lengthscale term on some dimensions by a Gaussian
learned from its earlier tasks (``LengthscalePrior``, ``fit_gp(learned=...)``) and give
the GP a prior mean learned from them (``fit_gp(mean=...)``: fitted to the target's data
as ``a + b * mean(x)``, the GP modelling the residual); without them, nothing above
changes.

Categorical parameters enter the kernel through their one-hot columns, each with its own
lengthscale: two different choices are at a learned, choice-specific distance, as in a
weighted Hamming kernel, at the cost of one Matérn kernel instead of the sum-and-product
of ``MixedSingleTaskGP``. The acquisition optimiser only ever evaluates exact one-hot
vertices, so the relaxation between vertices is never used.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import Mean, ZeroMean
from scipy.optimize import minimize

from hpo_service.engine.device import DTYPE, device, to_numpy

__all__ = [
    "GTOL",
    "GTOL_ROWS",
    "MEAN_FULL_WEIGHT_ROWS",
    "MIN_NOISE",
    "REFIT_GROWTH",
    "REFIT_MIN_ROWS",
    "AveragedPosteriorMean",
    "HyperparameterCache",
    "Hyperparameters",
    "LengthscalePrior",
    "default_cache",
    "fit_gp",
    "fit_hyperparameters",
    "fit_tolerance",
    "matern52",
]

MIN_NOISE = 1e-6
FloatArray = npt.NDArray[np.float64]

# Bounds on the log-parameters keep L-BFGS-B away from overflowing kernels: lengthscales
# between 0.01 and 100 cube widths, output scales within three decades of the data's.
_LOG_RHO_BOUNDS = (math.log(1e-4), math.log(1e4))
_LOG_SCALE_BOUNDS = (math.log(1e-3), math.log(1e3))
_LOG_NOISE_BOUNDS = (math.log(1e-9), math.log(10.0))
_JITTER = 1e-8

# A study with thousands of trials gains nothing from refitting after every one: its
# hyperparameters move by little per trial, and a fit on the capped training set is
# most of a request. From REFIT_MIN_ROWS usable rows on, the cached hyperparameters are
# reused until the history has grown by REFIT_GROWTH since they were fitted (the model
# itself is always rebuilt on the latest data). Below that, every request refits (warm).
REFIT_MIN_ROWS = 500
REFIT_GROWTH = 1.05
# A transferred prior mean keeps its fitted weight up to this many rows, then fades as
# MEAN_FULL_WEIGHT_ROWS / n: the target's own data take over the shape.
MEAN_FULL_WEIGHT_ROWS = 20
# The MAP fit stops when the projected gradient of the negative log posterior is below
# GTOL * max(1, n / GTOL_ROWS). The log posterior is a sum over the n rows, so its
# gradient near the optimum grows with n while the loss left on the table (about the
# squared gradient over the curvature, which grows with n too) stays small. Measured at
# n = 300, d = 12, 8 consecutive warm fits each (``bench_latency_peers.py``'s
# histories): a fixed 1e-2 took 9-22 evaluations on Styblinski-Tang and 9-32 on the
# padded Hartmann-6; 0.06 takes 4-13 and 5-23 and stops 0.003 and 0.015 nats (mean;
# at most 0.005 and 0.04) above a fit polished to 1e-4: half the fit's time, for a
# posterior that differs by a few hundredths of a nat. Up to GTOL_ROWS rows nothing
# changes.
GTOL = 1e-2
GTOL_ROWS = 50


@dataclass(frozen=True)
class Hyperparameters:
    """One output's kernel hyperparameters, in the log space they are optimised in.

    Attributes:
        log_rho: length-``d`` log inverse squared lengthscales.
        log_scale: log output scale (kernel variance).
        log_noise: log of the noise variance above ``MIN_NOISE``.
    """

    log_rho: tuple[float, ...]
    log_scale: float
    log_noise: float

    @classmethod
    def default(cls, dim: int) -> Hyperparameters:
        """Lengthscales of one cube width, unit variance, unit noise: a smooth start."""
        return cls((0.0,) * dim, 0.0, 0.0)

    @classmethod
    def from_vector(cls, v: FloatArray) -> Hyperparameters:
        """Inverse of ``vector``."""
        return cls(tuple(float(x) for x in v[:-2]), float(v[-2]), float(v[-1]))

    def vector(self) -> FloatArray:
        """The ``d + 2`` parameters as one vector: log rho, log scale, log noise."""
        return np.array([*self.log_rho, self.log_scale, self.log_noise], dtype=np.float64)

    @property
    def lengthscales(self) -> FloatArray:
        """Length-``d`` lengthscales in cube units."""
        return np.exp(-0.5 * np.array(self.log_rho, dtype=np.float64))

    @property
    def noise(self) -> float:
        """Noise variance on the standardised scale."""
        return MIN_NOISE + math.exp(self.log_noise)


@dataclass(frozen=True)
class LengthscalePrior:
    """A Gaussian prior on chosen log inverse squared lengthscales, learned elsewhere.

    Why: the cube-sized default (peaked at a lengthscale of one cube width) is right when
    nothing is known, but a transferred study's earlier tasks already show the
    objective's lengthscales (``transfer/prior.py``). Where ``centre`` is finite its
    Gaussian replaces the default term of that dimension, and the MAP fit also starts
    from the centre; NaN keeps the default. The prior does not change with the data, so
    the target's own likelihood outweighs it as its trials accumulate.

    Attributes:
        centre: per encoded column, the prior mean of log rho (NaN: default prior).
        sigma: per encoded column, the prior standard deviation of log rho.
    """

    centre: tuple[float, ...]
    sigma: tuple[float, ...]

    def start(self, default: Hyperparameters) -> Hyperparameters:
        """``default`` with the finite centres as its log rho: a start for the MAP fit."""
        rho = tuple(
            c if math.isfinite(c) else r for c, r in zip(self.centre, default.log_rho, strict=True)
        )
        return Hyperparameters(rho, default.log_scale, default.log_noise)


@dataclass(frozen=True)
class _CacheEntry:
    fingerprint: str
    n: int
    hypers: tuple[Hyperparameters, ...]


class HyperparameterCache:
    """A bounded LRU map from a study key to its last fitted hyperparameters.

    Designers are rebuilt for every request, so the previous fit can only survive here.
    An entry also remembers a fingerprint of the data it was fitted on: the same data
    again (a retried request) reuses the hyperparameters as they are, which keeps
    suggestions reproducible and skips the fit. Safe to share between threads.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> _CacheEntry | None:
        """The entry for ``key``, refreshed as most recently used; None if absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: _CacheEntry) -> None:
        """Store ``entry``, evicting the least recently used beyond the bound."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (tests use it to start cold)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


_DEFAULT_CACHE = HyperparameterCache()


def default_cache() -> HyperparameterCache:
    """The process-wide cache used when a designer is given none."""
    return _DEFAULT_CACHE


def matern52(sqdist: torch.Tensor) -> torch.Tensor:
    """Matérn-5/2 correlation of squared scaled distances (elementwise, differentiable)."""
    # The lower clamp keeps the gradient of sqrt finite at zero distance (the diagonal),
    # where the true derivative with respect to the hyperparameters is zero anyway. The
    # upper one stops exp(-r) from reaching subnormal numbers, which are two orders of
    # magnitude slower on x86 and change nothing (the kernel is < 1e-28 there).
    r = torch.sqrt(sqdist.clamp(1e-30, 5000.0) * 5.0)
    return (1.0 + r + r.square() / 3.0) * torch.exp(-r)


def _kernel_matrix(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Noisy training covariance ``K + noise*I``, ``n x n``, differentiable in ``theta``."""
    d = x.shape[-1]
    xs = x * torch.exp(0.5 * theta[:d])
    sq = xs.square().sum(-1)
    sqdist = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * xs @ xs.T).clamp_min(0.0)
    k = torch.exp(theta[d]) * matern52(sqdist)
    noise = MIN_NOISE + torch.exp(theta[d + 1]) + _JITTER
    return k + noise * torch.eye(x.shape[0], dtype=x.dtype, device=x.device)


def _log_prior(
    theta: torch.Tensor, d: int, learned: LengthscalePrior | None = None
) -> torch.Tensor:
    rho = torch.exp(theta[:d])
    scale = torch.exp(theta[d])
    noise = MIN_NOISE + torch.exp(theta[d + 1])
    per_dim = -(0.1 / rho + 0.1 * rho)
    if learned is not None:
        centre = torch.tensor(learned.centre, dtype=theta.dtype, device=theta.device)
        sigma = torch.tensor(learned.sigma, dtype=theta.dtype, device=theta.device)
        known = torch.isfinite(centre)
        gauss = -0.5 * ((theta[:d] - torch.nan_to_num(centre)) / sigma).square()
        per_dim = torch.where(known, gauss, per_dim)
    return per_dim.sum() + (torch.log(scale) - scale) + (0.1 * torch.log(noise) - 30.0 * noise)


def _loss_and_grad(
    v: FloatArray, x: torch.Tensor, y: torch.Tensor, learned: LengthscalePrior | None = None
) -> tuple[float, FloatArray]:
    """Negative log posterior (constants dropped) and its gradient in the log-parameters.

    The gradient of the marginal likelihood with respect to the covariance matrix is
    ``(K^-1 - a a^T) / 2`` with ``a = K^-1 y``; computing it from the Cholesky factor and
    back-propagating only through the elementwise kernel is about five times cheaper
    than differentiating through the factorisation itself.

    Args:
        v: ``d + 2`` log-parameters (see ``Hyperparameters.vector``).
        x: ``n x d`` training inputs in the unit cube.
        y: length-``n`` standardised training targets.
        learned: a lengthscale prior replacing the default on some dimensions.
    """
    d = x.shape[-1]
    theta = torch.tensor(v, dtype=DTYPE, device=x.device, requires_grad=True)
    with torch.enable_grad():
        k = _kernel_matrix(theta, x)
        with torch.no_grad():
            chol, info = torch.linalg.cholesky_ex(k)
            if int(info) != 0:
                eye = torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
                chol = torch.linalg.cholesky(k + 1e-6 * eye)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), chol)
            dk = 0.5 * (torch.cholesky_inverse(chol) - alpha @ alpha.T)
            nll = torch.log(torch.diagonal(chol)).sum() + 0.5 * (y.unsqueeze(-1) * alpha).sum()
        prior = _log_prior(theta, d, learned)
        surrogate = (k * dk).sum() - prior
        (grad,) = torch.autograd.grad(surrogate, theta)
    return float(nll - prior.detach()), to_numpy(grad)


def fit_hyperparameters(
    x: torch.Tensor,
    y: torch.Tensor,
    start: Hyperparameters,
    *,
    gtol: float | None = None,
    learned: LengthscalePrior | None = None,
) -> tuple[Hyperparameters, float]:
    """MAP hyperparameters of one output by L-BFGS-B from ``start``.

    Args:
        x: ``n x d`` training inputs in the unit cube.
        y: length-``n`` standardised targets.
        start: the initial point (a warm start or ``Hyperparameters.default``).
        gtol: projected-gradient tolerance; None: ``GTOL`` scaled to the rows
            (``fit_tolerance``). Tighter buys nothing measurable.
        learned: a lengthscale prior replacing the default on some dimensions.

    Returns:
        The optimum and its loss (negative log posterior), to compare starts.
    """
    d = x.shape[-1]
    bounds = [_LOG_RHO_BOUNDS] * d + [_LOG_SCALE_BOUNDS, _LOG_NOISE_BOUNDS]
    x0 = np.clip(start.vector(), [b[0] for b in bounds], [b[1] for b in bounds])

    res = minimize(
        _loss_and_grad,
        x0,
        args=(x, y, learned),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"gtol": fit_tolerance(len(x)) if gtol is None else gtol, "maxiter": 500},
    )
    v = np.asarray(res.x, dtype=np.float64)
    return Hyperparameters.from_vector(v), float(res.fun)


def fit_tolerance(n: int) -> float:
    """The fit's projected-gradient tolerance for ``n`` rows (see ``GTOL``)."""
    return GTOL * max(1.0, n / GTOL_ROWS)


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha1(to_numpy(x).tobytes())
    h.update(to_numpy(y).tobytes())
    return h.hexdigest()


def _fit_output(
    x: torch.Tensor,
    y: torch.Tensor,
    warm: Hyperparameters | None,
    cold_too: bool,
    learned: LengthscalePrior | None = None,
) -> Hyperparameters:
    d = x.shape[-1]
    starts = [Hyperparameters.default(d)] if warm is None else [warm]
    if warm is not None and cold_too:
        starts.append(Hyperparameters.default(d))
    if learned is not None:
        starts.append(learned.start(Hyperparameters.default(d)))
    best: tuple[Hyperparameters, float] | None = None
    for start in starts:
        try:
            found = fit_hyperparameters(x, y, start, learned=learned)
        except (RuntimeError, ValueError):
            continue
        if math.isfinite(found[1]) and (best is None or found[1] < best[1]):
            best = found
    return best[0] if best is not None else Hyperparameters.default(d)


class AveragedPosteriorMean:
    """``x (..., n, dim) -> (..., n)``: the average of fixed GPs' posterior means.

    Why here: a transferred study's prior mean is the average of its sources' GP
    posterior means (``transfer/source_mean.py`` puts their rows and hyperparameters in
    the inner designer's coordinates). That is this module's kernel and training
    covariance, so it is computed with them rather than with a second copy in the
    transfer layer. The weights ``scale * (K + noise I)^-1 y`` and the scaled points are
    computed once; the acquisition optimiser calls the mean thousands of times per
    request, so each call only evaluates cross-covariances, on ``x``'s device and dtype
    (tensors are moved there once per device).

    Args:
        columns: the columns of ``x`` the fitted GPs' inputs correspond to.
        fits: per GP, its ``m x len(columns)`` inputs, its ``m`` (standardised) targets
            and its hyperparameters as ``Hyperparameters.vector`` (log rho per column,
            log output scale, log noise).
    """

    def __init__(
        self,
        columns: list[int],
        fits: list[tuple[FloatArray, FloatArray, FloatArray]],
    ) -> None:
        self.columns = columns
        self._parts: list[tuple[torch.Tensor, ...]] = []
        for x, y, vector in fits:
            theta = torch.as_tensor(vector, dtype=DTYPE)
            xt = torch.as_tensor(x, dtype=DTYPE)
            alpha = torch.linalg.solve(
                _kernel_matrix(theta, xt), torch.as_tensor(y, dtype=DTYPE)
            ) * torch.exp(theta[-2])
            inv = torch.exp(0.5 * theta[: xt.shape[-1]])
            points = xt * inv
            self._parts.append((points, points.square().sum(-1), alpha, inv))
        self._moved: dict[tuple[torch.device, torch.dtype], list[tuple[torch.Tensor, ...]]] = {}

    def _on(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        key = (x.device, x.dtype)
        if key not in self._moved:
            self._moved[key] = [
                tuple(t.to(device=x.device, dtype=x.dtype) for t in part) for part in self._parts
            ]
        return self._moved[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The mean at ``x`` (differentiable)."""
        xs = x[..., self.columns]
        total = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        parts = self._on(x)
        for points, sq, alpha, inv in parts:
            z = xs * inv
            sqdist = (
                z.square().sum(-1, keepdim=True) + sq - 2.0 * z @ points.transpose(-1, -2)
            ).clamp_min(0.0)
            total = total + matern52(sqdist) @ alpha
        return total / len(parts)


class _AffineMean(Mean):  # type: ignore[misc]
    """``a + b * f(x)``: a transferred mean, scaled to the target's standardised data."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], a: float, b: float) -> None:
        super().__init__()
        self.f, self.a, self.b = f, a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a + self.b * self.f(x)


def _mean_weights(mv: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Least-squares ``a, b`` of ``y ~ a + b * mv`` with ``b >= 0``, faded for many rows.

    A negative ``b`` would turn the sources' shape upside down: then no mean (``b = 0``).
    """
    m, t = to_numpy(mv), to_numpy(y)
    n = len(t)
    var = float(np.var(m))
    b = float(np.mean((m - m.mean()) * (t - t.mean())) / var) if var > 1e-12 else 0.0
    b = max(0.0, b) * min(1.0, MEAN_FULL_WEIGHT_ROWS / max(n, 1))
    return float(t.mean() - b * m.mean()), b


def fit_gp(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    cache: HyperparameterCache | None = None,
    cache_key: str | None = None,
    n_total: int | None = None,
    learned: LengthscalePrior | None = None,
    mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[SingleTaskGP, tuple[Hyperparameters, ...]]:
    """Build a ``SingleTaskGP`` on the data with MAP hyperparameters, warm-started.

    Args:
        train_x: ``n x d`` inputs in the unit cube.
        train_y: ``n x m`` outcomes (each column is modelled independently).
        cache: where warm starts live; None disables warm starting.
        cache_key: identifies the study (and which outcomes) within ``cache``.
        n_total: usable rows in the whole history (``train_x`` may be a capped subset);
            decides when a large study refits (see ``REFIT_GROWTH``).
        learned: a lengthscale prior for every output (transfer); None, the default,
            keeps the cube-sized prior and the fit exactly as without it.
        mean: a prior mean on the standardised scale (transfer; one output only),
            fitted as ``a + b * mean(x)`` (``_mean_weights``); None: zero mean.

    Returns:
        The model in eval mode and the per-output hyperparameters.
    """
    n, m = train_y.shape
    transform = Standardize(m=m)
    y_std, _ = transform(train_y)
    transform.eval()
    offset: _AffineMean | None = None
    if mean is not None and m == 1:
        with torch.no_grad():
            mv = mean(train_x)
        offset = _AffineMean(mean, *_mean_weights(mv, y_std[:, 0]))
        y_std = y_std - (offset.a + offset.b * mv).unsqueeze(-1)
    entry = cache.get(cache_key) if cache is not None and cache_key is not None else None
    fingerprint = _fingerprint(train_x, train_y)
    if entry is not None and (
        len(entry.hypers) != m or len(entry.hypers[0].log_rho) != d_of(train_x)
    ):
        entry = None
    total = n if n_total is None else n_total
    if entry is not None and (
        entry.fingerprint == fingerprint
        or (total >= REFIT_MIN_ROWS and total < entry.n * REFIT_GROWTH)
    ):
        hypers = entry.hypers
    else:
        # A fit warm-started from much less data may sit in a stale optimum: refit from the
        # defaults as well when the data grew by half since the cached fit.
        cold_too = entry is not None and total >= 1.5 * entry.n
        hypers = tuple(
            _fit_output(
                train_x,
                y_std[:, i],
                entry.hypers[i] if entry is not None else None,
                cold_too,
                learned,
            )
            for i in range(m)
        )
        if cache is not None and cache_key is not None:
            cache.put(cache_key, _CacheEntry(fingerprint, total, hypers))
    return _build_model(train_x, train_y, hypers, offset), hypers


def d_of(x: torch.Tensor) -> int:
    """Number of encoded columns of an ``n x d`` input tensor."""
    return int(x.shape[-1])


def _build_model(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    hypers: tuple[Hyperparameters, ...],
    mean: _AffineMean | None = None,
) -> SingleTaskGP:
    m = len(hypers)
    d = d_of(train_x)
    batch = torch.Size([m]) if m > 1 else torch.Size([])
    kernel = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d, batch_shape=batch), batch_shape=batch)
    likelihood = GaussianLikelihood(noise_constraint=GreaterThan(MIN_NOISE / 2), batch_shape=batch)
    model = SingleTaskGP(
        train_x,
        train_y,
        likelihood=likelihood,
        covar_module=kernel,
        mean_module=mean if mean is not None else ZeroMean(batch_shape=batch),
        outcome_transform=Standardize(m=m),
    ).to(train_x)
    ls = torch.tensor(np.stack([h.lengthscales for h in hypers]), dtype=DTYPE, device=device())
    scales = torch.tensor([math.exp(h.log_scale) for h in hypers], dtype=DTYPE, device=device())
    noises = torch.tensor([h.noise for h in hypers], dtype=DTYPE, device=device())
    with torch.no_grad():
        if m > 1:
            kernel.base_kernel.lengthscale = ls.unsqueeze(-2)
            kernel.outputscale = scales
            likelihood.noise = noises.unsqueeze(-1)
        else:
            kernel.base_kernel.lengthscale = ls
            kernel.outputscale = scales[0]
            likelihood.noise = noises
    model.eval()
    return model
