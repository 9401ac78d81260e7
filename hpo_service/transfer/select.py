"""Choosing source studies and turning their best trials into winners of the new space.

A source is usable when its space is *compatible* with the new one: parameters are
matched by name; a shared name must have the same type and overlapping bounds (numeric
ranges that intersect, categorical choices in common), and at least one parameter must be
shared. Only completed trials with a finite objective count, and a source needs at least
``min_completed`` of them, so a study that barely started cannot steer the next one.
Every decision is returned with its reason, so it can be recorded on the study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from hpo_service.domain import (
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    Objective,
    OrdinalParameter,
    Params,
    SearchSpace,
    Trial,
    TrialState,
    objective_value,
)
from hpo_service.domain.region import Box, Ellipsoid
from hpo_service.transfer.coords import (
    EncoderFactory,
    any_assignment,
    fill_inactive,
    grid_step,
    is_finite,
    numeric_names,
    region_coords,
    unconditional,
)
from hpo_service.transfer.fit import Winners

__all__ = [
    "SourceDecision",
    "SourceStudy",
    "center_params",
    "choose_sources",
    "collect_winners",
    "compatibility_problem",
    "map_params",
    "ranked",
]

DEFAULT_MIN_WIDTH = 0.05


@dataclass(frozen=True)
class SourceStudy:
    """A candidate source: its space, objective and finished trials."""

    study_id: str
    space: SearchSpace
    objective: Objective
    trials: Sequence[Trial]


@dataclass(frozen=True)
class SourceDecision:
    """Whether a candidate is used, and why not when it is not."""

    study_id: str
    used: bool
    reason: str | None = None
    matched: list[str] = field(default_factory=list)
    n_completed: int = 0


def compatibility_problem(target: SearchSpace, source: SearchSpace) -> str | None:
    """Why ``source`` cannot inform ``target``; None when it can."""
    shared = [name for name in target.names if name in source.names]
    if not shared:
        return "no parameter shared by name"
    for name in shared:
        a, b = target.get(name), source.get(name)
        if a.type != b.type:
            return f"parameter {name!r} is {b.type} there but {a.type} here"
        if not _overlap(a, b):
            return f"parameter {name!r} has no values in common"
    return None


def _overlap(
    a: FloatParameter | IntParameter | OrdinalParameter | CategoricalParameter,
    b: FloatParameter | IntParameter | OrdinalParameter | CategoricalParameter,
) -> bool:
    if isinstance(a, CategoricalParameter) and isinstance(b, CategoricalParameter):
        return bool(set(a.choices) & set(b.choices))
    lo_a, hi_a = _range(a)
    lo_b, hi_b = _range(b)
    return max(lo_a, lo_b) <= min(hi_a, hi_b)


def _range(
    p: FloatParameter | IntParameter | OrdinalParameter | CategoricalParameter,
) -> tuple[float, float]:
    if isinstance(p, OrdinalParameter):
        return float(p.values[0]), float(p.values[-1])
    if isinstance(p, FloatParameter | IntParameter):
        return float(p.low), float(p.high)
    return 0.0, 0.0


def ranked(source: SourceStudy) -> list[Trial]:
    """The source's completed trials with a finite objective, best first."""
    done = [
        t
        for t in source.trials
        if t.state is TrialState.COMPLETED
        and objective_value(source.objective, t.result) is not None
    ]
    sign = source.objective.sign()
    return sorted(
        done, key=lambda t: (sign * (objective_value(source.objective, t.result) or 0.0), t.number)
    )


def choose_sources(
    target: SearchSpace, candidates: Sequence[SourceStudy], *, min_completed: int
) -> list[SourceDecision]:
    """Decide for every candidate, in the given order."""
    out: list[SourceDecision] = []
    for c in candidates:
        problem = compatibility_problem(target, c.space)
        n = len(ranked(c))
        if problem is None and n < min_completed:
            problem = f"only {n} completed trials (at least {min_completed} needed)"
        matched = [name for name in target.names if name in c.space.names]
        out.append(SourceDecision(c.study_id, problem is None, problem, matched, n))
    return out


def map_params(target: SearchSpace, params: Params, fill: Params) -> Params:
    """A source assignment expressed in ``target``.

    Shared parameters keep their value, clipped into the target's range (ordinals snap to
    the nearest grid value); parameters the source lacks, or whose value has no place in
    the target (an unknown choice), take the value from ``fill``.

    Raises:
        InvalidInputError: if ``fill`` itself is not valid for ``target``.
    """
    out: Params = {}
    for p in target.parameters:
        value = params.get(p.name)
        mapped = _map_value(p, value) if value is not None else None
        candidate = {**out, p.name: mapped if mapped is not None else fill.get(p.name)}
        out = {k: v for k, v in candidate.items() if v is not None}
    active = {k: v for k, v in out.items() if target.is_active(k, out)}
    return target.validate_params(active)


def _map_value(
    p: FloatParameter | IntParameter | OrdinalParameter | CategoricalParameter, value: object
) -> float | int | str | None:
    if isinstance(p, CategoricalParameter):
        return value if isinstance(value, str) and value in p.choices else None
    if not is_finite(value):
        return None
    v = float(value)  # type: ignore[arg-type]
    if isinstance(p, OrdinalParameter):
        if p.scale == "log" and v <= 0:
            return p.values[0]
        key = math.log if p.scale == "log" else float
        return min(p.values, key=lambda g: abs(key(g) - key(v)))
    if isinstance(p, IntParameter):
        return int(min(p.high, max(p.low, round(v))))
    return min(p.high, max(p.low, v))


def collect_winners(
    target: SearchSpace,
    sources: Sequence[SourceStudy],
    *,
    top_k: int,
    make_encoder: EncoderFactory,
    min_width: float = DEFAULT_MIN_WIDTH,
) -> Winners:
    """The top-``top_k`` trials of every source as points of the target's encoded cube.

    Returns:
        ``Winners`` with one row per trial; coordinates a trial lacks are NaN.
    """
    flat = unconditional(target)
    encoder = make_encoder(flat)
    names = numeric_names(target)
    rows: list[npt.NDArray[np.float64]] = []
    tasks: list[int] = []
    cats: dict[str, list[str | None]] = {
        p.name: [] for p in target.parameters if isinstance(p, CategoricalParameter)
    }
    fill = any_assignment(flat)
    for index, source in enumerate(sources):
        for trial in ranked(source)[:top_k]:
            present: Params = {}
            for p in target.parameters:
                v = _map_value(p, trial.params[p.name]) if p.name in trial.params else None
                if v is not None:
                    present[p.name] = v
            z = region_coords(encoder, flat, {**fill, **present}, names)
            z[[i for i, n in enumerate(names) if n not in present]] = np.nan
            rows.append(z)
            tasks.append(index)
            for name, values in cats.items():
                v = present.get(name)
                values.append(v if isinstance(v, str) else None)
    widths = np.array([max(min_width, grid_step(flat, n, encoder)) for n in names])
    return Winners(
        names=names,
        z=np.vstack(rows) if rows else np.zeros((0, len(names))),
        task=np.asarray(tasks, dtype=np.int64),
        min_width=widths,
        axis_ok=[target.get(n).conditions is None for n in names],
        categorical=cats,
        categorical_choices={
            p.name: list(p.choices)
            for p in target.parameters
            if isinstance(p, CategoricalParameter)
        },
    )


def center_params(
    target: SearchSpace, region: Box | Ellipsoid, make_encoder: EncoderFactory
) -> Params:
    """The assignment at the region's centre: what seeds use for parameters they lack."""
    flat = unconditional(target)
    encoder = make_encoder(flat)
    x = encoder.encode(any_assignment(flat))
    column = {c.name: c for c in encoder.columns}
    mid = fill_inactive(np.full((1, len(region.names)), np.nan), region)[0]
    if isinstance(region, Ellipsoid):
        where = {n: i for i, n in enumerate(region.names)}
        for a, v in zip(region.axes, region.center, strict=True):
            mid[where[a]] = min(1.0, max(0.0, v))
    for name, v in zip(region.names, mid, strict=True):
        x[column[name].start] = v
    for p in target.parameters:
        if isinstance(p, CategoricalParameter):
            c = column[p.name]
            x[c.start : c.stop] = 0.0
            kept = region.categorical_subsets.get(p.name, p.choices)
            x[c.start + p.choices.index(kept[0])] = 1.0
    return encoder.decode(x)
