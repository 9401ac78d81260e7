"""The best completed trials of a study: one incumbent, or the Pareto set.

The service's ``best`` endpoint answers from here. Only ``completed`` trials with a
finite value of every objective count; with outcome constraints only feasible ones do
(a trial missing a constrained metric is not known to be feasible, so it is left out).
A study with no such trial has no best trial: the answer is empty, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from hpo_service.domain import (
    Objective,
    OutcomeConstraint,
    StudyConfig,
    Trial,
    TrialState,
    objective_value,
)

__all__ = ["best_trial", "best_trials", "non_dominated", "pareto_front"]

_CHUNK = 1024


def _eligible(
    trials: Sequence[Trial],
    objectives: Sequence[Objective],
    constraints: Sequence[OutcomeConstraint],
) -> tuple[list[Trial], npt.NDArray[np.float64]]:
    """Feasible completed trials and their objective values turned to minimisation."""
    kept: list[Trial] = []
    rows: list[list[float]] = []
    for t in trials:
        if t.state != TrialState.COMPLETED:
            continue
        values = [objective_value(o, t.result) for o in objectives]
        if any(v is None for v in values):
            continue
        if not all(_satisfied(c, t.result) for c in constraints):
            continue
        kept.append(t)
        rows.append(
            [o.sign() * v for o, v in zip(objectives, values, strict=True) if v is not None]
        )
    return kept, np.array(rows, dtype=np.float64).reshape(len(kept), len(objectives))


def _satisfied(c: OutcomeConstraint, result: dict[str, float] | None) -> bool:
    value = None if result is None else result.get(c.metric)
    if not isinstance(value, int | float) or not np.isfinite(value):
        return False
    return c.satisfied(float(value))


def non_dominated(values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Mask of the rows of ``n x m`` ``values`` (minimised) that no other row dominates.

    A row dominates another when it is no worse in every column and better in one; equal
    rows do not dominate each other, so duplicates on the front are all kept. Memory is
    bounded by comparing in chunks of rows.
    """
    n = len(values)
    keep = np.ones(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        block = values[start : start + _CHUNK]
        no_worse = np.all(values[None, :, :] <= block[:, None, :], axis=-1)
        better = np.any(values[None, :, :] < block[:, None, :], axis=-1)
        keep[start : start + len(block)] = ~np.any(no_worse & better, axis=1)
    return keep


def pareto_front(
    trials: Sequence[Trial],
    objectives: Sequence[Objective],
    constraints: Sequence[OutcomeConstraint] = (),
) -> list[Trial]:
    """The Pareto-optimal feasible completed trials, ordered by the first objective.

    Args:
        trials: any trials of the study; unfinished and failed ones are ignored.
        objectives: the objectives (metric and goal) to trade off.
        constraints: outcome constraints a trial must meet to count.

    Returns:
        The non-dominated trials, best first on the first objective then by number.
    """
    kept, values = _eligible(trials, objectives, constraints)
    if not kept:
        return []
    mask = non_dominated(values)
    front = [(values[i, 0], kept[i].number, kept[i]) for i in np.flatnonzero(mask)]
    return [t for _, _, t in sorted(front, key=lambda item: (item[0], item[1]))]


def best_trial(
    trials: Sequence[Trial],
    objective: Objective,
    constraints: Sequence[OutcomeConstraint] = (),
) -> Trial | None:
    """The feasible completed trial with the best objective value (earliest on ties)."""
    kept, values = _eligible(trials, [objective], constraints)
    if not kept:
        return None
    order = sorted(range(len(kept)), key=lambda i: (values[i, 0], kept[i].number))
    return kept[order[0]]


def best_trials(trials: Sequence[Trial], config: StudyConfig) -> list[Trial]:
    """What a study's ``best`` endpoint returns: the incumbent, or the Pareto set.

    Single-objective studies give a list of at most one trial; studies with two or more
    objectives give their Pareto front. Empty when nothing feasible has completed.
    """
    objectives = config.all_objectives
    if len(objectives) >= 2:
        return pareto_front(trials, objectives, config.constraints)
    best = best_trial(trials, objectives[0], config.constraints)
    return [] if best is None else [best]
