"""Which source configurations to try first, and for how long (TRANSFER.md, warm start).

A new study of a family starts with the sources' best configurations ("seeds"). Two
questions decide how much they help:

**Order: consensus first.** Each source offers its best trial. A seed is worth trying
early when the *other* sources' top trials agree with it: if the tasks of a family differ
by a small shift, the point where many sources did well is, in expectation, closer to
the new task's optimum than any single source's winner, and a seed that no other source
supports (an outlier task, a lucky draw in a flat region) is the least likely to carry
over. ``support_order`` scores each seed by a kernel density of the other sources'
winners around it, counting each source once (its nearest top-k trial), so a source with
many near-identical winners does not outvote the others, and a seed's own source does not
vote for it. The bandwidth follows Scott's rule on a robust spread of the seeds, with the
coordinate's smallest meaningful width as a floor, so it needs no tuning per family and
works on grids. Ties (for instance two sources only) fall back to the distance to the
coordinate-wise median, then to the sources' order.

Before any seed, the *consensus point* (``consensus_point``): a mean shift of the sources'
winners started at the best-supported seed. It averages away part of each source's noise
and shift, and stays in its mode. The seeds after it are ordered by support *and*
distance to what was already proposed (``spread``), because the seed phase also serves
as the initial design of the model that takes over, and near-duplicates teach it little.
On 12 draws of each family of ``benchmarks/bench_transfer.py`` (seven sources with 50
random evaluations each; seeds evaluated alone, no model), the consensus point was the
better first proposal on average on five of the six families (not on the large-shift
one), and the spread order gave a better best-of-the-first-few on most of them.

**Length: seeds are the initial design.** A model-based designer starts with a
space-filling design only because it knows nothing yet; the seeds are a better initial
design because they are where earlier tasks did well, and they span the learned region
(it is fitted around them). Once the model has seen as many points as it needs to be
useful inside the region, further seeds are just lower-consensus guesses that compete
with the model's own proposals, so the seed phase ends there: ``seed_phase_length``
points inside the region (seeds counted, and trials the study already has). In a region
``d + 1`` points suffice: they determine a linear trend in every direction, the region
already localises the search, and the GP is normalised to the region's box. Without a
region (warm start only) the model faces the whole space and keeps its own, longer,
initial design, with seeds filling it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from hpo_service.transfer.fit import FloatArray, Winners

__all__ = ["consensus_point", "seed_phase_length", "source_bests", "support_order"]

_MEAN_SHIFT_STEPS = 20
_SUPPORT_FLOOR = 0.05


def seed_phase_length(n_params: int) -> int:
    """Points inside a region before a model-based designer takes over: ``d + 1``, >= 2."""
    return max(2, n_params + 1)


def source_bests(winners: Winners) -> tuple[list[int], FloatArray]:
    """Each source's best winner: task indices in first-seen order and their coordinates.

    ``collect_winners`` lists every source's trials best first, so a task's first row is
    its best trial.
    """
    tasks: list[int] = []
    rows: list[int] = []
    for i, t in enumerate(winners.task.tolist()):
        if t not in tasks:
            tasks.append(t)
            rows.append(i)
    return tasks, winners.z[rows] if rows else np.zeros((0, len(winners.names)))


def _bandwidth(points: FloatArray, floor: FloatArray) -> FloatArray:
    """Scott's rule per coordinate on a robust spread (MAD), floored at ``floor``."""
    n, d = points.shape
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (never present) columns
        med = np.nanmedian(points, axis=0)
        mad = 1.4826 * np.nanmedian(np.abs(points - med), axis=0)
        std = np.nanstd(points, axis=0)
    spread = np.where(np.isfinite(mad) & (mad > 0), mad, np.nan_to_num(std))
    scott = spread * max(n, 1) ** (-1.0 / (d + 4))
    return np.asarray(np.maximum(scott, floor), dtype=np.float64)


def support_order(
    winners: Winners, *, spread: bool = False, anchor: FloatArray | None = None
) -> list[int]:
    """Source task indices, the best-supported seed first (see the module docstring).

    Args:
        winners: every source's top-k trials in the new space's encoded cube, each
            source's best first (``select.collect_winners``).
        spread: after the first, pick greedily the seed with the largest (normalised
            support + a small floor) x (novelty: one minus the kernel to the nearest
            point already taken): supported *and* new. Seeds clustered next to one
            already proposed add little, and a model learns more from points that cover
            the region; the floor keeps unsupported seeds orderable, after the others.
        anchor: a point proposed before any seed (the consensus point): with
            ``spread``, distances count from it too and the first seed is chosen the
            same way, so the seed it averages is not proposed right after it.

    Returns:
        every task index that has a winner, once, in the order its best trial should be
        proposed.
    """
    tasks, bests = source_bests(winners)
    if len(tasks) <= 1:
        return tasks
    h = _bandwidth(bests, winners.min_width)
    support = np.zeros(len(tasks))
    for a, (task, z) in enumerate(zip(tasks, bests, strict=True)):
        for other in tasks:
            if other == task:
                continue
            w = winners.z[winners.task == other]
            u = (w - z) / h
            present = np.isfinite(u)
            if not present.any():
                continue
            sq = np.where(present, u * u, 0.0).sum(axis=1)
            support[a] += math.exp(-0.5 * float(sq.min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        middle = np.nanmedian(bests, axis=0)
    dist = np.sqrt(np.nansum(((bests - middle) / h) ** 2, axis=1))
    # Round the support so that floating-point noise does not beat the tie-breakers.
    keys = sorted(
        range(len(tasks)), key=lambda a: (-round(float(support[a]), 9), float(dist[a]), a)
    )
    if not spread:
        return [tasks[a] for a in keys]
    weight = support / max(float(support.max()), 1e-12) + _SUPPORT_FLOOR
    taken = [] if anchor is None else [np.asarray(anchor, dtype=np.float64)]
    chosen: list[int] = []
    if anchor is None:
        chosen.append(keys[0])
        taken.append(bests[keys[0]])
    while len(chosen) < len(tasks):
        rest = [a for a in keys if a not in chosen]
        gaps = {a: min(_novelty(bests[a], t, h) for t in taken) for a in rest}
        pick = max(rest, key=lambda a: (weight[a] * gaps[a], -keys.index(a)))
        chosen.append(pick)
        taken.append(bests[pick])
    return [tasks[a] for a in chosen]


def _novelty(z: FloatArray, taken: FloatArray, h: FloatArray) -> float:
    """``1 - kernel``: 0 on top of a taken point, saturating at ~1 a few bandwidths away.

    Bounded so that, once a seed is clearly apart from what was proposed, its support
    decides, and a far-away outlier cannot win on distance alone.
    """
    sq = float(np.nansum(((z - taken) / h) ** 2))
    return 1.0 - math.exp(-0.5 * sq)


def consensus_point(winners: Winners, start: int) -> FloatArray | None:
    """A local average of the sources' winners around task ``start``'s best, or None.

    Mean shift from the best-supported seed: repeatedly move to the kernel-weighted mean
    of every source's nearest top-k winner (one vote per source). Each source's best is
    a noisy estimate of where its task is good; averaging the sources that agree cancels
    part of that noise (and, for tasks that differ by small shifts, part of the shift), so
    the result is expected to be nearer the new task's optimum than any single winner.
    The kernel keeps the average local, so sources in another mode (a multimodal family,
    an outlier task) carry next to no weight and the point stays in the mode it started
    in. Coordinates a winner lacks do not vote; coordinates no winner has stay NaN.

    Returns:
        ``len(winners.names)`` coordinates, or None when fewer than three sources agree
        (weight above ``e^-2`` each), since the average of two is little better than
        either.
    """
    tasks, bests = source_bests(winners)
    if start not in tasks or len(tasks) < 3:
        return None
    h = _bandwidth(bests, winners.min_width)
    m = bests[tasks.index(start)].copy()
    groups = [winners.z[winners.task == t] for t in tasks]
    for _ in range(_MEAN_SHIFT_STEPS):
        nearest, weights = _nearest_votes(groups, m, h)
        total = np.nansum(np.where(np.isfinite(nearest), weights[:, None], 0.0), axis=0)
        moved = np.nansum(nearest * weights[:, None], axis=0) / np.where(total > 0, total, 1.0)
        moved = np.where(total > 0, moved, m)
        done = bool(np.nanmax(np.abs(moved - m) / h, initial=0.0) < 1e-3)
        m = moved
        if done:
            break
    _, weights = _nearest_votes(groups, m, h)
    if int(np.sum(weights > math.exp(-2.0))) < 3:
        return None
    return np.asarray(m, dtype=np.float64)


def _nearest_votes(
    groups: list[FloatArray], m: FloatArray, h: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Each source's winner nearest to ``m`` (scaled by ``h``) and its kernel weight."""
    rows: list[FloatArray] = []
    weights: list[float] = []
    for w in groups:
        u = (w - m) / h
        present = np.asarray(np.isfinite(u).any(axis=1), dtype=bool)
        sq = np.where(np.isfinite(u), u * u, 0.0).sum(axis=1)
        sq = np.where(present, sq, np.inf)
        i = int(np.argmin(sq))
        rows.append(w[i])
        weights.append(math.exp(-0.5 * float(sq[i])) if present[i] else 0.0)
    return np.vstack(rows), np.asarray(weights)
