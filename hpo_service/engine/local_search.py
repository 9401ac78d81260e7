"""``local``: trust-region search around the incumbent, for per-module refinement.

Complete(d)P found the per-module landscape near-invex but cut by divergence cliffs, where
a global GP fits poorly; its authors searched by random perturbations around the incumbent
in log space instead. This designer does that, statelessly (it is rebuilt per request):

- The encoded unit cube is the search space: log-scaled parameters are already in log
  space there, so one radius means one relative step for every learning rate.
- ``update`` replays the history in trial order to rebuild the trust region: the radius
  grows (×1.5) on every improvement of the incumbent and shrinks (×0.6) after
  ``max(2, ⌈d/4⌉)`` failures in a row; below ``min_radius`` it restarts at the initial
  radius. Diverged runs (failed, infeasible, or completed without a finite objective)
  count as failures and are kept as a cliff map.
- ``suggest`` draws many candidates around the incumbent (Gaussian steps of the current
  radius on a random subset of coordinates, TuRBO-style, so high-dimensional per-module
  spaces are explored a few coordinates at a time), rejects those within half a radius of
  a cliff or of a pending point, ranks the rest by a small GP's lower confidence bound when
  there are enough observations nearby, and returns the best ``count``.
- With no completed trial yet it proposes the centre of the cube, then space-filling
  points, so it also works standalone. As a second stage, enqueue the global optimum as a
  user trial: it becomes the incumbent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpo_service.domain import Params, StudyConfig, Trial, TrialState, objective_value
from hpo_service.engine.designer import Suggestion
from hpo_service.engine.encoding import FloatArray, SpaceEncoder

__all__ = ["LocalSearchDesigner", "TrustRegion", "make_local_designer"]

_GROW, _SHRINK = 1.5, 0.6
_CANDIDATES = 512
_GP_MIN_POINTS = 4


@dataclass
class TrustRegion:
    """The replayed search state: incumbent, its value, radius, failure streak, cliffs."""

    center: FloatArray | None
    best: float
    radius: float
    failures: int
    cliffs: list[FloatArray]
    restarts: int = 0


class LocalSearchDesigner:
    """Trust-region local search in the encoded (log) space with a cliff map.

    Args:
        config: the study; its primary objective's goal decides better.
        seed: seeds candidate draws (mixed with the history size, so the same history and
            seed give the same suggestions).
        initial_radius: starting trust-region radius in unit-cube coordinates.
        min_radius: below this the region restarts at ``initial_radius``.
        max_radius: the region never grows beyond this.
        use_gp: rank candidates by a GP lower confidence bound when data allows.
    """

    def __init__(
        self,
        config: StudyConfig,
        seed: int | None,
        *,
        initial_radius: float = 0.15,
        min_radius: float = 0.01,
        max_radius: float = 0.5,
        use_gp: bool = True,
    ) -> None:
        self.config = config
        self.seed = seed
        self.encoder = SpaceEncoder(config.space)
        self.initial_radius = initial_radius
        self.min_radius = min_radius
        self.max_radius = max_radius
        self.use_gp = use_gp
        self._x: list[FloatArray] = []
        self._y: list[float] = []
        self._pending: list[FloatArray] = []
        self._known: set[str] = set()
        self._n_history = 0
        self.region = TrustRegion(None, math.inf, initial_radius, 0, [])

    # ---- history -------------------------------------------------------------------------

    def _value(self, trial: Trial) -> float | None:
        """The minimisation-signed objective; None when the trial diverged or is infeasible."""
        if trial.state != TrialState.COMPLETED:
            return None
        value = objective_value(self.config.objective, trial.result)
        if value is None:
            return None
        for c in self.config.constraints:
            metric = (trial.result or {}).get(c.metric)
            if metric is None or not c.satisfied(metric):
                return None
        return self.config.objective.sign() * value

    def update(self, completed: Sequence[Trial], pending: Sequence[Trial]) -> None:
        """Replay ``completed`` in trial order to rebuild the trust region."""
        d = self.encoder.dim
        patience = max(2, math.ceil(d / 4))
        region = TrustRegion(None, math.inf, self.initial_radius, 0, [])
        self._x, self._y = [], []
        for trial in sorted(completed, key=lambda t: t.number):
            x = self.encoder.encode(trial.params)
            value = self._value(trial)
            if value is None:
                if (
                    trial.state != TrialState.COMPLETED
                    or not trial.result
                    or (objective_value(self.config.objective, trial.result) is None)
                ):
                    region.cliffs.append(x)
                region.failures += 1
            else:
                self._x.append(x)
                self._y.append(value)
                if value < region.best - 1e-12:
                    improved = region.center is not None
                    region.center, region.best = x, value
                    region.failures = 0
                    if improved:
                        region.radius = min(self.max_radius, region.radius * _GROW)
                    continue
                region.failures += 1
            if region.center is not None and region.failures >= patience:
                region.radius *= _SHRINK
                region.failures = 0
                if region.radius < self.min_radius:
                    region.radius = self.initial_radius
                    region.restarts += 1
        self.region = region
        self._pending = [self.encoder.encode(t.params) for t in pending]
        self._known = {_params_key(t.params) for t in (*completed, *pending)}
        self._n_history = len(completed) + len(pending)

    # ---- proposals -----------------------------------------------------------------------

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(None if self.seed is None else [self.seed, self._n_history])

    def suggest(self, count: int) -> list[Suggestion]:
        """Return ``count`` points around the incumbent (space-filling before there is one)."""
        rng = self._rng()
        region = self.region
        if region.center is None:
            return self._initial(count, rng)
        cands = self._candidates(region, rng)
        cands = self._filter(cands, region)
        if len(cands) == 0:
            cands = self._candidates(
                TrustRegion(region.center, region.best, self.initial_radius, 0, []), rng
            )
        order = self._rank(cands, region)
        out: list[Suggestion] = []
        # Compared after decoding: steps on integer, ordinal or categorical coordinates
        # can round back onto a point already tried or pending, however far in the cube.
        taken = set(self._known)
        for i in order:
            params = self.encoder.decode(cands[i])
            if _params_key(params) in taken:
                continue
            taken.add(_params_key(params))
            out.append(
                Suggestion(
                    params=params,
                    metadata={
                        "designer": "local",
                        "radius": round(region.radius, 5),
                        "restarts": region.restarts,
                        "cliffs": len(region.cliffs),
                    },
                )
            )
            if len(out) == count:
                break
        return out

    def _initial(self, count: int, rng: np.random.Generator) -> list[Suggestion]:
        d = self.encoder.dim
        points = [np.full(d, 0.5)] if not self._pending else []
        while len(points) < count:
            points.append(rng.random(d))
        return [
            Suggestion(
                params=self.encoder.decode(x), metadata={"designer": "local", "phase": "initial"}
            )
            for x in points[:count]
        ]

    def _candidates(self, region: TrustRegion, rng: np.random.Generator) -> FloatArray:
        assert region.center is not None
        d = self.encoder.dim
        prob = min(1.0, 4.0 / d)
        mask = rng.random((_CANDIDATES, d)) < prob
        empty = ~mask.any(axis=1)
        mask[empty, rng.integers(0, d, int(empty.sum()))] = True
        steps = rng.normal(0.0, region.radius, (_CANDIDATES, d)) * mask
        cands = np.clip(region.center[None, :] + steps, 0.0, 1.0)
        for col in self._categorical_blocks():
            flip = rng.random(_CANDIDATES) < prob * region.radius * 2
            choice = rng.integers(col.start, col.stop, _CANDIDATES)
            cands[flip, col.start : col.stop] = 0.0
            cands[flip, choice[flip]] = 1.0
        return cands

    def _categorical_blocks(self) -> list[slice]:
        cat = set(self.encoder.categorical_columns)
        return [slice(c.start, c.stop) for c in self.encoder.columns if c.start in cat]

    def _filter(self, cands: FloatArray, region: TrustRegion) -> FloatArray:
        keep = np.ones(len(cands), dtype=bool)
        avoid = [*region.cliffs, *self._pending]
        if avoid:
            pts = np.stack(avoid)
            dist = np.linalg.norm(cands[:, None, :] - pts[None, :, :], axis=-1).min(axis=1)
            keep &= dist >= region.radius / 2
        return cands[keep]

    def _rank(self, cands: FloatArray, region: TrustRegion) -> list[int]:
        assert region.center is not None
        if not self.use_gp or len(self._y) < _GP_MIN_POINTS:
            return list(range(len(cands)))  # random order: draws are already random
        x = np.stack(self._x)
        y = np.asarray(self._y)
        near = np.linalg.norm(x - region.center, axis=1) <= 4 * region.radius
        if near.sum() < _GP_MIN_POINTS:
            return list(range(len(cands)))
        lcb = _gp_lcb(x[near], y[near], cands, lengthscale=2 * region.radius)
        return [int(i) for i in np.argsort(lcb)]


def _params_key(params: Params) -> str:
    return json.dumps(params, sort_keys=True)


def _gp_lcb(
    x: FloatArray, y: FloatArray, cands: FloatArray, *, lengthscale: float, beta: float = 1.0
) -> FloatArray:
    """Lower confidence bound μ − β·σ of a zero-mean RBF GP on standardised values.

    Args:
        x: observed points, n × d.
        y: observed minimisation-signed values, length n.
        cands: candidate points, m × d.
        lengthscale: RBF lengthscale in cube units (tied to the trust radius).
        beta: exploration weight.
    """
    mu0, sd0 = float(y.mean()), float(y.std()) or 1.0
    z = (y - mu0) / sd0

    def k(a: FloatArray, b: FloatArray) -> FloatArray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.asarray(np.exp(-0.5 * d2 / lengthscale**2))

    kxx = k(x, x) + 1e-2 * np.eye(len(x))
    chol = np.linalg.cholesky(kxx)
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
    kcx = k(cands, x)
    mean = kcx @ alpha
    v = np.linalg.solve(chol, kcx.T)
    var = np.clip(1.0 - (v * v).sum(0), 1e-12, None)
    return np.asarray(mean - beta * np.sqrt(var))


def make_local_designer(config: StudyConfig, seed: int | None) -> LocalSearchDesigner:
    """The factory ``engine/registry.py`` registers as ``local``."""
    return LocalSearchDesigner(config, seed)
