"""Early stopping on intermediate measurements: which running trials are not worth finishing.

A study chooses a policy with ``StudyConfig.stopping`` (a ``StoppingSpec``, checked by
``parse_stopping`` when the study is created, resolved by ``stopping_policy``); the
measurement and heartbeat endpoints call ``should_stop`` with the trial and the study's
other trials and report the decision; a stopped trial finishes with its partial result.
The decision is a pure function of the measurements, so any API process gives the same
answer.

The policy object (every key but ``rule`` is optional)::

    {"rule": "median",             # stop if worse than the median of the others
     "metric": "val_loss",         # default: the study's (first) objective metric
     "min_steps": 10,              # no decision before this step (warm-up)
     "min_trials": 5}              # others that must have reached the step first

    {"rule": "percentile", "percentile": 25, ...}  # keep only the best 25 percent

    {"rule": "successive_halving", # asynchronous successive halving (ASHA-style)
     "min_steps": 1,               # the first rung; rungs at min_steps * factor**k
     "reduction_factor": 3,        # keep the best 1/factor at each rung
     "min_trials": 3}              # trials at a rung before it cuts (default: factor)

    {"rule": "none"}               # never stop (same as no policy)

A trial's value at a step is its best value of the metric up to that step, on the
objective's goal, so a noisy curve is not stopped for one bad measurement. Other trials
count at a step only if they reached it; failed trials never count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import numpy as np

from hpo_service.domain import Goal, Objective, StoppingSpec, Trial, TrialState
from hpo_service.errors import FieldError, InvalidInputError

__all__ = [
    "StopDecision",
    "StoppingPolicy",
    "parse_stopping",
    "should_stop",
    "stopping_policy",
    "validate_stopping",
]

Rule = Literal["median", "percentile", "successive_halving"]
_RULES = ("median", "percentile", "successive_halving", "none")
_KEYS: dict[str, frozenset[str]] = {
    "median": frozenset({"rule", "metric", "min_steps", "min_trials"}),
    "percentile": frozenset({"rule", "metric", "min_steps", "min_trials", "percentile"}),
    "successive_halving": frozenset(
        {"rule", "metric", "min_steps", "min_trials", "reduction_factor"}
    ),
    "none": frozenset({"rule"}),
}


@dataclass(frozen=True)
class StoppingPolicy:
    """A validated early-stopping policy (see the module docstring for the fields)."""

    rule: Rule
    metric: str | None = None
    min_steps: int = 0
    min_trials: int = 5
    percentile: float = 50.0
    reduction_factor: int = 3


@dataclass(frozen=True)
class StopDecision:
    """Whether to stop a trial, and why, in words a user can act on."""

    stop: bool
    reason: str


def parse_stopping(
    config: Mapping[str, Any] | None, *, loc: tuple[str | int, ...] = ("body", "stopping")
) -> StoppingSpec | None:
    """Check a study's stopping object and return it typed, as the user gave it.

    ``{"rule": "none"}`` is kept (a study shows what it was created with); it resolves
    to no policy (``stopping_policy``).

    Args:
        config: the user's JSON object, or None for no early stopping.
        loc: where the object sits in the request, prefixed to every error location.

    Returns:
        The spec, or None when ``config`` is None.

    Raises:
        InvalidInputError: listing every offending field.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise InvalidInputError.at(loc, "stopping must be an object with a 'rule'")
    rule = config.get("rule")
    if rule not in _RULES:
        raise InvalidInputError.at(
            (*loc, "rule"), f"rule must be one of {list(_RULES)}, got {rule!r}"
        )
    errors = [
        FieldError((*loc, key), f"unknown field {key!r} for rule {rule!r}")
        for key in config
        if key not in _KEYS[rule]
    ]
    if rule != "none":
        metric = config.get("metric")
        if metric is not None and (not isinstance(metric, str) or not metric):
            errors.append(FieldError((*loc, "metric"), "metric must be a non-empty string"))
        sh = rule == "successive_halving"
        _check_int(config, "reduction_factor", 2, loc, errors)
        _check_int(config, "min_steps", 1 if sh else 0, loc, errors)
        _check_int(config, "min_trials", 1, loc, errors)
        if rule == "percentile":
            value = config.get("percentile")
            if not _is_number(value) or not 0 < value < 100:
                errors.append(
                    FieldError((*loc, "percentile"), "percentile must be a number in (0, 100)")
                )
    if errors:
        raise InvalidInputError("invalid early-stopping policy", errors)
    return StoppingSpec.model_validate(dict(config))


def stopping_policy(spec: StoppingSpec | None) -> StoppingPolicy | None:
    """The policy a checked spec describes, with the rule's defaults filled in.

    Returns:
        None for no spec or ``rule: none``.
    """
    if spec is None or spec.rule == "none":
        return None
    sh = spec.rule == "successive_halving"
    factor = spec.reduction_factor if spec.reduction_factor is not None else 3
    default_trials = factor if sh else 5
    return StoppingPolicy(
        rule=spec.rule,
        metric=spec.metric,
        min_steps=spec.min_steps if spec.min_steps is not None else (1 if sh else 0),
        min_trials=spec.min_trials if spec.min_trials is not None else default_trials,
        percentile=float(spec.percentile) if spec.percentile is not None else 50.0,
        reduction_factor=factor,
    )


def validate_stopping(
    config: Mapping[str, Any] | None, *, loc: tuple[str | int, ...] = ("body", "stopping")
) -> StoppingPolicy | None:
    """Check a stopping object and return the policy it describes (None: no stopping).

    Raises:
        InvalidInputError: listing every offending field.
    """
    return stopping_policy(parse_stopping(config, loc=loc))


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(
    config: Mapping[str, Any],
    key: str,
    minimum: int,
    loc: tuple[str | int, ...],
    errors: list[FieldError],
) -> None:
    if key not in config:
        return
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        errors.append(FieldError((*loc, key), f"{key} must be an integer >= {minimum}"))


def should_stop(
    policy: StoppingPolicy | None,
    trial: Trial,
    others: Sequence[Trial],
    objective: Objective,
) -> StopDecision:
    """Decide whether ``trial`` should stop now, from its and the others' measurements.

    Args:
        policy: the study's policy; None never stops.
        trial: the running trial, with its measurements so far.
        others: the study's other trials (any state; ``trial`` itself is skipped).
        objective: gives the default metric and which direction is better.
    """
    if policy is None:
        return StopDecision(False, "no early-stopping policy")
    metric = policy.metric or objective.metric
    curve = _curve(trial, metric)
    if not curve:
        return StopDecision(False, f"no measurement of {metric!r} yet")
    peers = [_curve(t, metric) for t in others if t.id != trial.id and _counts(t)]
    if policy.rule == "successive_halving":
        return _halving(policy, curve, peers, objective.goal, metric)
    return _percentile_rule(policy, curve, peers, objective.goal, metric)


Curve = list[tuple[int, float]]


def _counts(t: Trial) -> bool:
    return t.state != TrialState.FAILED


def _curve(t: Trial, metric: str) -> Curve:
    points = [
        (m.step, float(m.metrics[metric]))
        for m in t.measurements
        if metric in m.metrics and _is_number(m.metrics[metric])
    ]
    return sorted(points)


def _best_until(curve: Curve, step: int, goal: Goal) -> float | None:
    values = [v for s, v in curve if s <= step]
    if not values:
        return None
    return min(values) if goal == "minimize" else max(values)


def _reached(curve: Curve, step: int) -> bool:
    return bool(curve) and curve[-1][0] >= step


def _percentile_rule(
    policy: StoppingPolicy, curve: Curve, peers: list[Curve], goal: Goal, metric: str
) -> StopDecision:
    step = curve[-1][0]
    if step < policy.min_steps:
        return StopDecision(False, f"step {step} is before min_steps {policy.min_steps}")
    own = _best_until(curve, step, goal)
    values = [
        v for c in peers if _reached(c, step) and (v := _best_until(c, step, goal)) is not None
    ]
    if len(values) < policy.min_trials or own is None:
        return StopDecision(
            False, f"{len(values)} other trials reached step {step}, need {policy.min_trials}"
        )
    # Keep the best `percentile` percent: for minimisation the cut is that percentile of
    # the values, for maximisation the mirrored one.
    q = policy.percentile if goal == "minimize" else 100.0 - policy.percentile
    cut = float(np.percentile(values, q))
    worse = own > cut if goal == "minimize" else own < cut
    name = "median" if policy.rule == "median" else f"{policy.percentile:g}th percentile"
    relation = "worse than" if worse else "within"
    return StopDecision(
        worse,
        f"best {metric} {own:.6g} by step {step} is {relation} the {name} {cut:.6g} "
        f"of {len(values)} other trials",
    )


def _halving(
    policy: StoppingPolicy, curve: Curve, peers: list[Curve], goal: Goal, metric: str
) -> StopDecision:
    step = curve[-1][0]
    previous = curve[-2][0] if len(curve) > 1 else -1
    rung = _rung_crossed(policy, previous, step)
    if rung is None:
        return StopDecision(False, f"step {step} crosses no rung")
    own = _best_until(curve, rung, goal)
    cohort = [
        v for c in peers if _reached(c, rung) and (v := _best_until(c, rung, goal)) is not None
    ]
    if own is None or len(cohort) + 1 < policy.min_trials:
        return StopDecision(
            False, f"{len(cohort) + 1} trials at rung {rung}, need {policy.min_trials}"
        )
    sign = 1.0 if goal == "minimize" else -1.0
    rank = sum(1 for v in cohort if sign * v < sign * own)
    keep = max(1, (len(cohort) + 1) // policy.reduction_factor)
    stop = rank >= keep
    verdict = "outside" if stop else "within"
    return StopDecision(
        stop,
        f"{metric} {own:.6g} ranks {rank + 1} of {len(cohort) + 1} at rung {rung}, "
        f"{verdict} the top {keep}",
    )


def _rung_crossed(policy: StoppingPolicy, previous: int, step: int) -> int | None:
    """The highest rung in ``(previous, step]``, or None.

    Deciding only when a rung is crossed makes the halving asynchronous but final: a
    trial promoted past a rung is not re-judged there when later trials arrive.
    """
    rung, crossed = policy.min_steps, None
    while rung <= step:
        if rung > previous:
            crossed = rung
        rung *= policy.reduction_factor
    return crossed
