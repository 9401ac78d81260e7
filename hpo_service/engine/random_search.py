"""Space-filling baselines: uniform random and scrambled Sobol designers.

Both sample the unit cube and decode through ``SpaceEncoder``, so they honour log scales,
integer and ordinal grids, categorical choices and conditions the same way as every other
designer. They serve as algorithms of their own and as the initial design of the GP.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence

import numpy as np

from hpo_service.domain import Params, StudyConfig, Trial
from hpo_service.engine.designer import Suggestion
from hpo_service.engine.encoding import FloatArray, SpaceEncoder

__all__ = ["RandomDesigner", "SobolDesigner"]

_RESAMPLE_TRIES = 32


def _key(params: Params) -> str:
    return json.dumps(params, sort_keys=True)


class _CubeSampler:
    """Shared logic: draw unit-cube points, decode, avoid repeating known points."""

    def __init__(self, config: StudyConfig, seed: int | None) -> None:
        self.config = config
        self.seed = seed
        self.encoder = SpaceEncoder(config.space)
        self._seen: set[str] = set()
        self._n_history = 0

    def update(self, completed: Sequence[Trial], pending: Sequence[Trial]) -> None:
        """Remember every known point so that discrete spaces are not re-proposed."""
        self._seen = {_key(t.params) for t in (*completed, *pending)}
        self._n_history = len(completed) + len(pending)

    def _draw(self, n: int) -> FloatArray:
        raise NotImplementedError

    def suggest(self, count: int) -> list[Suggestion]:
        """Return ``count`` distinct points; repeats only when the space is exhausted."""
        out: list[Suggestion] = []
        seen = set(self._seen)
        pool = list(self._draw(count * _RESAMPLE_TRIES))
        fallback: list[Params] = []
        for x in pool:
            if len(out) == count:
                break
            params = self.encoder.decode(x)
            key = _key(params)
            if key in seen:
                fallback.append(params)
                continue
            seen.add(key)
            out.append(Suggestion(params=params))
        # A tiny discrete space can run out of new points; repeat rather than return nothing.
        while len(out) < count and fallback:
            out.append(Suggestion(params=fallback.pop(0), metadata={"repeat": True}))
        return out


class RandomDesigner(_CubeSampler):
    """Uniform random search in the encoded cube.

    The generator is seeded from the study seed and the history size, so the same seed and
    the same history give the same suggestions.
    """

    def _draw(self, n: int) -> FloatArray:
        seed = None if self.seed is None else [self.seed, self._n_history]
        rng = np.random.default_rng(seed)
        return rng.random((n, self.encoder.dim))


class SobolDesigner(_CubeSampler):
    """Scrambled Sobol sequence, continued past the points already in the history.

    Skipping ahead by the history size keeps successive requests on one low-discrepancy
    sequence even though the designer is rebuilt for every request.
    """

    def _draw(self, n: int) -> FloatArray:
        from scipy.stats import qmc  # scipy.stats takes seconds to import; defer it

        sampler = qmc.Sobol(d=self.encoder.dim, scramble=True, seed=self.seed)
        if self._n_history:
            sampler.fast_forward(self._n_history)
        with warnings.catch_warnings():
            # Balance over powers of two does not matter for a continued sequence.
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(sampler.random(n), dtype=np.float64)
