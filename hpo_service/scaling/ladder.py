"""Ladder diagnostics: does a hyperparameter's optimum drift across a family's proxy scales?

A ladder is a family of studies of one model at several proxy scales. For every numeric
hyperparameter the diagnostics

1. take each study's optimum: a weighted mean of log(value) over its top trials (weights
   fall off exponentially with the objective gap to the best trial);
2. map each optimum through the parameterisation's rules to the smallest study's proxy
   shape, so that a perfectly transferring hyperparameter gives the same number at every
   rung whatever base shape each study used;
3. fit log(mapped optimum) against log(scale) by least squares: the slope is the *drift
   exponent* the rules fail to explain (0 = transfers). Each parameter is fitted on the
   studies that hold it, against every shape axis that varies among them (jointly, when
   width and depth both vary), so that a family may mix a global study, depth rungs of its
   learning rate and width rungs of a per-module study;
4. bootstrap the trials of every study to get a confidence interval of the slope;
5. decide: ``transfers`` when the whole interval lies within ±tolerance, ``drifts`` when it
   excludes 0, ``insufficient-data`` otherwise or when there are too few rungs or trials.

When a parameter drifts and a target is given, the fitted trend is extrapolated instead of
the plain rule, and the report says so. ``beta1``/``beta2`` are fitted on log(1 − β).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hpo_service.domain.shape import ModelShape, parse_shape
from hpo_service.domain.space import ParamValue
from hpo_service.domain.study import Goal
from hpo_service.scaling.config import ScaleConfig, validate_scale
from hpo_service.scaling.extrapolate import scale_value, shape_multipliers
from hpo_service.scaling.naming import parse_name
from hpo_service.scaling.rules import build_table

__all__ = [
    "LadderPoint",
    "LadderReport",
    "LadderStudy",
    "LadderTrial",
    "ParameterDrift",
    "Trend",
    "ladder_diagnostics",
]

Verdict = Literal["transfers", "drifts", "insufficient-data"]
_AXES = ("width", "depth", "batch_size", "tokens")
_MIN_TRIALS = 4


@dataclass(frozen=True)
class LadderTrial:
    """A completed trial: its parameters and objective value (None if it has none)."""

    params: Mapping[str, ParamValue]
    value: float | None


@dataclass(frozen=True)
class LadderStudy:
    """One rung: a study's scale configuration and its completed trials."""

    study_id: str
    scale: ScaleConfig | Mapping[str, Any]
    trials: Sequence[LadderTrial] = field(default_factory=tuple)
    goal: Goal = "minimize"


class LadderPoint(BaseModel):
    """One rung's optimum for one parameter, as mapped to the reference shape."""

    model_config = ConfigDict(frozen=True)

    study_id: str
    scale: int
    optimum: float
    mapped_optimum: float
    n_trials: int


class Trend(BaseModel):
    """The fitted drift carried to a target, next to what the plain rule would give."""

    model_config = ConfigDict(frozen=True)

    target_scale: int
    rule_value: float
    trend_value: float
    note: str


class ParameterDrift(BaseModel):
    """The diagnostic of one hyperparameter across the ladder."""

    model_config = ConfigDict(frozen=True)

    param: str
    verdict: Verdict
    drift_exponent: float | None
    ci: tuple[float, float] | None
    points: list[LadderPoint]
    trend: Trend | None = None
    note: str = ""
    exponents: dict[str, float] = Field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = Field(default_factory=dict)

    def drift_factor(self, base: ModelShape, target: ModelShape) -> float:
        """The factor the fitted drift adds on top of the rules from ``base`` to ``target``.

        ``Π_axis (target_axis / base_axis) ** exponent`` over the fitted axes; 1 where an
        axis is missing from either shape, or nothing was fitted.
        """
        log_factor = 0.0
        for axis, slope in self.exponents.items():
            b, t = getattr(base, axis), getattr(target, axis)
            if b and t:
                log_factor += slope * (math.log(int(t)) - math.log(int(b)))
        # Betas are fitted on log(1 − β): for them the factor applies to 1 − β.
        return math.exp(log_factor)


class LadderReport(BaseModel):
    """The body of ``GET /v1/families/{family}/ladder``."""

    model_config = ConfigDict(frozen=True)

    axis: str | None
    reference: dict[str, int] | None
    studies: list[str]
    parameters: list[ParameterDrift]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready response body."""
        return self.model_dump(mode="json")


@dataclass
class _Rung:
    study_id: str
    config: ScaleConfig
    values: np.ndarray  # objective values, minimisation sign applied
    params: list[Mapping[str, ParamValue]]


def _transform(name: str, v: float) -> float | None:
    """Log of the value (of 1 − β for betas); None where the log is undefined."""
    x = 1.0 - v if name in ("beta1", "beta2") else v
    return math.log(x) if x > 0 else None


def _role_for(name: str) -> tuple[str, str | None] | None:
    try:
        parsed = parse_name(name)
    except ValueError:
        return None
    if parsed.kind == "role" and parsed.hparam is not None:
        return parsed.hparam, parsed.role
    if parsed.kind == "bare" and parsed.hparam is not None:
        return parsed.hparam, "hidden"  # a bare name is read as its hidden-matrix value
    if parsed.kind == "global" and parsed.hparam is not None:
        return parsed.hparam, None
    return None


def _rule_log_factor(name: str, base: ModelShape, ref: ModelShape, config: ScaleConfig) -> float:
    """Log of the rule's factor taking ``name`` from ``base`` to ``ref`` (0 if no rule)."""
    hr = _role_for(name)
    if hr is None:
        return 0.0
    table = build_table(config.parameterization, config.readout, config.optimizer)
    sv = scale_value(table, hr[0], hr[1], 0.5, shape_multipliers(base, ref))
    return math.log(sv.factor) if sv.factor > 0 else 0.0


def _optimum(logs: np.ndarray, values: np.ndarray, top_fraction: float) -> float:
    """Estimate the best log-value from trials (log-values, objective to minimise).

    A weighted parabola through the better half of the trials gives the vertex when it is
    convex with the vertex inside their range; otherwise the weighted mean of the top
    ``top_fraction`` (weights exp(−gap / spread)) stands in.
    """
    order = np.argsort(values)
    half = order[: max(5, len(values) // 2)]
    x, y = logs[half], values[half]
    # A parabola needs three distinct abscissae; trials that pin the value (a per-module
    # study's fixed global, a bootstrap sample of few values) fall through to the mean.
    if len(np.unique(np.round(x, 9))) >= 3 and len(x) >= 5:
        a, b, _ = np.polyfit(x, y, 2)
        if a > 0 and x.min() <= -b / (2 * a) <= x.max():
            return float(-b / (2 * a))
    k = max(3, math.ceil(top_fraction * len(values)))
    idx = order[:k]
    top = values[idx]
    spread = float(np.std(top)) or 1.0
    w = np.exp(-(top - top.min()) / spread)
    return float(np.sum(w * logs[idx]) / np.sum(w))


def _columns(rung: _Rung, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``name``'s log-values, the objective, and the other varying log-parameters.

    Returns:
        ``logs`` (n,), ``values`` (n,) and ``others`` (n × k): one row per trial that holds
        a usable value of ``name``; the columns are the study's other numeric parameters
        that every such trial holds and that vary.
    """
    keep = []
    for p, v in zip(rung.params, rung.values, strict=True):
        raw = p.get(name)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            lg = _transform(name, float(raw))
            if lg is not None:
                keep.append((lg, float(v), p))
    logs = np.array([k[0] for k in keep])
    values = np.array([k[1] for k in keep])
    cols = []
    for other in _numeric_names([rung]):
        if other == name:
            continue
        col = [
            _transform(other, float(x))
            if isinstance(x := p.get(other), int | float) and not isinstance(x, bool)
            else None
            for _, _, p in keep
        ]
        if all(c is not None for c in col) and len({round(float(c or 0), 9) for c in col}) > 1:
            cols.append([float(c or 0) for c in col])
    others = np.array(cols).T if cols else np.zeros((len(keep), 0))
    return logs, values, others


def _estimate(
    logs: np.ndarray, values: np.ndarray, others: np.ndarray, top_fraction: float
) -> float:
    """A study's best log-value of one parameter, allowing for the others it varied.

    A per-module search moves a dozen values at once, so the loss against any one of them
    carries the others' effects as noise: the marginal parabola of ``_optimum`` then puts
    a role's optimum wherever the luckiest trials happen to lie. A separable quadratic in
    all the varying log-parameters, fitted jointly by (lightly ridged) least squares, takes
    the others' effects out; its vertex along ``logs`` is the estimate when the fit is
    convex there and the vertex lies inside the trials' range. Otherwise (too few trials
    for the columns, a concave or out-of-range fit) the marginal estimate stands in.
    """
    k = others.shape[1]
    n = len(values)
    if k and n >= 2 * (k + 1) + 3 and len(np.unique(np.round(logs, 9))) >= 3:
        x = np.column_stack([logs, others])
        mean, sd = x.mean(axis=0), x.std(axis=0)
        sd[sd == 0] = 1.0
        z = (x - mean) / sd
        design = np.column_stack([np.ones(n), z, z**2])
        ridge = 1e-3 * np.eye(design.shape[1])
        ridge[0, 0] = 0.0
        coef = np.linalg.solve(design.T @ design + ridge, design.T @ values)
        a, b = coef[1 + (k + 1)], coef[1]
        if a > 0:
            vertex = mean[0] - b / (2 * a) * sd[0]
            if logs.min() <= vertex <= logs.max():
                return float(vertex)
    return _optimum(logs, values, top_fraction)


def ladder_diagnostics(
    studies: Sequence[LadderStudy],
    *,
    axis: str | None = None,
    target: Mapping[str, Any] | ModelShape | None = None,
    top_fraction: float = 0.25,
    n_boot: int = 200,
    tolerance: float = 0.15,
    seed: int = 0,
) -> LadderReport:
    """Diagnose, per hyperparameter, whether its optimum drifts across the ladder.

    Args:
        studies: the family's studies with their scale configs and completed trials.
        axis: the scale axis to fit against (``width``, ``depth``, ``batch_size``,
            ``tokens``); default: the axis whose proxy sizes vary most.
        target: optional target shape; drifting parameters get their trend carried there.
        top_fraction: share of each study's trials that count towards its optimum.
        n_boot: bootstrap replicates for the confidence interval.
        tolerance: |drift exponent| below which a parameter counts as transferring.
        seed: seeds the bootstrap.

    Returns:
        One ``ParameterDrift`` per numeric parameter shared by the studies.
    """
    warnings: list[str] = []
    rungs: list[_Rung] = []
    for i, s in enumerate(studies):
        config = validate_scale(s.scale, loc=("studies", i, "scale"))
        assert config is not None
        ok = [t for t in s.trials if t.value is not None and math.isfinite(t.value)]
        sign = 1.0 if s.goal == "minimize" else -1.0
        rungs.append(
            _Rung(
                s.study_id,
                config,
                np.array([sign * float(t.value) for t in ok if t.value is not None]),
                [t.params for t in ok],
            )
        )
    ids = [r.study_id for r in rungs]
    if not rungs:
        return LadderReport(
            axis=None,
            reference=None,
            studies=[],
            parameters=[],
            warnings=["no studies in the family"],
        )
    report_axis = axis or _pick_axis(rungs, warnings)
    usable = [r for r in rungs if getattr(r.config.proxy, report_axis) is not None]
    usable.sort(key=lambda r: _size(r.config.proxy))
    ref = usable[0].config.proxy if usable else rungs[0].config.proxy
    rng = np.random.default_rng(seed)
    tgt = (
        parse_shape(
            {**ref.axes(), **dict(target)} if isinstance(target, Mapping) else target, ("target",)
        )
        if target is not None
        else None
    )
    # Each parameter is fitted on the rungs that hold it: a family may mix a global study,
    # depth rungs of its LR and width rungs of a per-module study, which share no name.
    pool = usable if axis is not None else rungs
    params = [
        _diagnose(
            name,
            sorted((r for r in pool if _holds(r, name)), key=lambda r: _size(r.config.proxy)),
            axis,
            top_fraction,
            n_boot,
            tolerance,
            rng,
            tgt,
        )
        for name in _numeric_names(pool)
    ]
    return LadderReport(
        axis=report_axis, reference=ref.axes(), studies=ids, parameters=params, warnings=warnings
    )


def _size(shape: ModelShape) -> tuple[int, ...]:
    """Sort key: smaller models first (width, then depth, batch and tokens)."""
    return tuple(int(getattr(shape, a) or 0) for a in _AXES)


def _pick_axis(rungs: Sequence[_Rung], warnings: list[str]) -> str:
    ranges: dict[str, float] = {}
    for a in _AXES:
        sizes = [getattr(r.config.proxy, a) for r in rungs]
        known = [x for x in sizes if x is not None]
        if len(known) == len(sizes) and known:
            ranges[a] = math.log(max(known)) - math.log(min(known))
    varying = [a for a, v in ranges.items() if v > 0]
    if len(varying) > 1:
        warnings.append(
            "several axes vary across the ladder ("
            + ", ".join(varying)
            + "); each parameter is fitted jointly on the axes that vary among its studies"
        )
    return max(ranges, key=lambda a: ranges[a]) if ranges else "width"


def _holds(rung: _Rung, name: str) -> bool:
    return any(isinstance(p.get(name), int | float) for p in rung.params)


def _numeric_names(rungs: Sequence[_Rung]) -> list[str]:
    return sorted(
        {
            k
            for r in rungs
            for p in r.params
            for k, v in p.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    )


def _varying_axes(rungs: Sequence[_Rung]) -> list[str]:
    """Axes every rung states and that take more than one value, widest range first."""
    spans: dict[str, float] = {}
    for a in _AXES:
        sizes = [getattr(r.config.proxy, a) for r in rungs]
        if all(x is not None for x in sizes) and len(set(sizes)) > 1:
            spans[a] = math.log(max(sizes)) - math.log(min(sizes))
    return sorted(spans, key=lambda a: -spans[a])


def _insufficient(name: str, note: str) -> ParameterDrift:
    return ParameterDrift(
        param=name,
        verdict="insufficient-data",
        drift_exponent=None,
        ci=None,
        points=[],
        note=note,
    )


def _diagnose(
    name: str,
    rungs: Sequence[_Rung],
    axis: str | None,
    top_fraction: float,
    n_boot: int,
    tolerance: float,
    rng: np.random.Generator,
    target: ModelShape | None,
) -> ParameterDrift:
    if not rungs:
        return _insufficient(name, "no study holds it")
    ref = rungs[0].config.proxy
    data = []
    for r in rungs:
        logs, vals, others = _columns(r, name)
        # A study that pins the value (a per-module study's kept global) measured nothing
        # about where its optimum lies: it only repeats the value it was handed.
        if len(vals) < _MIN_TRIALS or len(np.unique(np.round(logs, 9))) < 2:
            continue
        shift = _rule_log_factor(name, r.config.base_shape, ref, r.config)
        data.append((r, logs, vals, shift, others))
    data = _cleanest(data)
    axes = [axis] if axis is not None else _varying_axes([d[0] for d in data])
    if not axes or len(data) < len(axes) + 1:
        return _insufficient(
            name,
            f"needs more studies than varying axes, each with ≥{_MIN_TRIALS} finite trials, "
            "at different proxy shapes",
        )
    design = np.array(
        [[1.0, *(math.log(int(getattr(d[0].config.proxy, a))) for a in axes)] for d in data]
    )
    ys = np.array([_estimate(d[1], d[2], d[4], top_fraction) + d[3] for d in data])
    coef = np.linalg.lstsq(design, ys, rcond=None)[0]
    boots = []
    for _ in range(n_boot):
        yb = []
        for _r, logs, vals, shift, others in data:
            idx = rng.integers(0, len(vals), len(vals))
            yb.append(_estimate(logs[idx], vals[idx], others[idx], top_fraction) + shift)
        boots.append(np.linalg.lstsq(design, np.array(yb), rcond=None)[0][1:])
    quantiles = np.percentile(np.array(boots), [2.5, 97.5], axis=0)
    intervals = {a: (float(quantiles[0, i]), float(quantiles[1, i])) for i, a in enumerate(axes)}
    exponents = {a: float(coef[i + 1]) for i, a in enumerate(axes)}
    verdict: Verdict
    # As many studies as coefficients: the line passes through every point, so any noise
    # in a study's optimum reads as a trend, and the bootstrap of searches concentrated
    # near their incumbents cannot show it. A verdict needs one study more than that.
    exact = len(data) < len(axes) + 2
    if exact:
        verdict = "insufficient-data"
    elif all(-tolerance <= lo and hi <= tolerance for lo, hi in intervals.values()):
        verdict = "transfers"
    elif any(lo > 0 or hi < 0 for lo, hi in intervals.values()):
        verdict = "drifts"
    else:
        verdict = "insufficient-data"
    main = axes[0]
    points = [
        LadderPoint(
            study_id=d[0].study_id,
            scale=int(getattr(d[0].config.proxy, main)),
            optimum=_back(name, _estimate(d[1], d[2], d[4], top_fraction)),
            mapped_optimum=_back(name, float(y)),
            n_trials=len(d[2]),
        )
        for d, y in zip(data, ys, strict=True)
    ]
    drift = ParameterDrift(
        param=name,
        verdict=verdict,
        drift_exponent=exponents[main],
        ci=intervals[main],
        points=points,
        note=(
            f"{len(data)} studies for {len(axes) + 1} coefficients: a verdict needs one more"
            if exact
            else _note(verdict, exponents)
        ),
        exponents=exponents,
        intervals=intervals,
    )
    if verdict == "drifts" and target is not None and getattr(target, main) is not None:
        trend = _trend(name, drift, float(ys[0]), ref, rungs[0], target)
        drift = drift.model_copy(update={"trend": trend})
    return drift


def _cleanest(data: list[Any]) -> list[Any]:
    """The studies that measure ``name`` most directly: fewest other values varied.

    A one-parameter sweep (a depth rung of the LR) measures its optimum directly; a global
    search moving five values at once measures it through a fit of the others' effects,
    which at small budgets lands up to an octave away from its own best trial. When the
    sweeps alone cover two or more shapes they are the ladder, and the searches are set
    aside (mixed in, a search at another shape would add an axis measured by one biased
    point); otherwise, per shape, the cleanest studies there are kept.
    """
    fewest = min(d[4].shape[1] for d in data) if data else 0
    clean = [d for d in data if d[4].shape[1] == fewest]
    if len({_size(d[0].config.proxy) for d in clean}) >= 2:
        return clean
    per_shape: dict[tuple[int, ...], int] = {}
    for d in data:
        key = _size(d[0].config.proxy)
        per_shape[key] = min(per_shape.get(key, d[4].shape[1]), d[4].shape[1])
    return [d for d in data if d[4].shape[1] == per_shape[_size(d[0].config.proxy)]]


def _note(verdict: Verdict, exponents: Mapping[str, float]) -> str:
    if verdict == "transfers":
        return "optimum stays put under the rules"
    if verdict == "insufficient-data":
        return "confidence interval too wide to decide"
    moves = " · ".join(f"{a}^{b:+.2f}" for a, b in exponents.items())
    return f"optimum moves as {moves} beyond what the rules predict"


def _back(name: str, log_value: float) -> float:
    v = math.exp(log_value)
    return 1.0 - v if name in ("beta1", "beta2") else v


def _trend(
    name: str,
    drift: ParameterDrift,
    ref_log: float,
    ref: ModelShape,
    rung: _Rung,
    target: ModelShape,
) -> Trend:
    """The smallest rung's optimum carried to ``target`` by the rule, and by rule + drift."""
    rule_log = ref_log + _rule_log_factor(name, ref, target, rung.config)
    trend_log = rule_log + math.log(drift.drift_factor(ref, target))
    main = next(iter(drift.exponents))
    moves = " · ".join(f"{a}^{b:+.2f}" for a, b in drift.exponents.items())
    return Trend(
        target_scale=int(getattr(target, main)),
        rule_value=_back(name, rule_log),
        trend_value=_back(name, trend_log),
        note=f"extrapolated the fitted trend ({moves} on top of the "
        f"{rung.config.parameterization} rules) instead of the plain rule",
    )
