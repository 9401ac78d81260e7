"""Which observed trials the GP trains on once a study has more than it can afford.

An exact GP costs O(n³) to fit and O(n²) per acquisition evaluation, so past a cap the
cost must stop growing with the history. The rows kept are chosen for what each tells
the optimiser:

- the best rows, because the acquisition function improves on them and local structure
  around the incumbent matters most;
- the most recent rows, because they sit where the optimiser is searching now and are
  what a worker just reported;
- a stratified sample of the rest, one row per quantile stratum of the score, so the
  model still sees the whole range of outcomes (and the global trend) at bounded size.

The choice is a pure function of the scores, their order and a seed, so a request is
reproducible.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_CAP", "select_training_rows"]

IntArray = npt.NDArray[np.int64]

# Past ~600 rows a fit and an acquisition optimisation together exceed what a request
# should wait for on a 2-core machine; the pool absorbs the rare slow request.
DEFAULT_CAP = 600


def select_training_rows(
    scores: npt.NDArray[np.float64],
    cap: int = DEFAULT_CAP,
    *,
    seed: int = 0,
    best_fraction: float = 0.25,
    recent_fraction: float = 0.25,
) -> IntArray:
    """Indices of at most ``cap`` rows to train on, in increasing order.

    Args:
        scores: length-``n`` vector, lower is better, rows in the order they were
            observed (the last row is the most recent).
        cap: the largest number of rows returned.
        seed: seeds the stratified draw.
        best_fraction: share of ``cap`` given to the lowest scores.
        recent_fraction: share of ``cap`` given to the most recent rows.

    Returns:
        Sorted row indices; all rows when ``n <= cap``.
    """
    n = len(scores)
    if cap <= 0:
        raise ValueError(f"cap must be positive, got {cap}")
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    n_best = int(cap * best_fraction)
    n_recent = int(cap * recent_fraction)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.argsort(scores, kind="stable")[:n_best]] = True
    chosen[n - n_recent :] = True
    rest = np.flatnonzero(~chosen)
    n_strata = cap - int(chosen.sum())
    if n_strata > 0 and len(rest) > 0:
        chosen[_stratified(rest, scores[rest], n_strata, seed)] = True
    return np.flatnonzero(chosen).astype(np.int64)


def _stratified(rows: IntArray, scores: npt.NDArray[np.float64], k: int, seed: int) -> IntArray:
    """One random row from each of ``k`` equal-count strata of ``scores``."""
    if k >= len(rows):
        return rows
    order = rows[np.argsort(scores, kind="stable")]
    edges = np.linspace(0, len(order), k + 1).astype(np.int64)
    rng = np.random.default_rng(seed)
    picks = [int(rng.integers(lo, hi)) for lo, hi in itertools.pairwise(edges)]
    return order[np.array(picks, dtype=np.int64)]
