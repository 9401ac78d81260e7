"""Ladder-corrected extrapolation: the rules, plus what a family's ladder measured.

The rule tables say how each optimum moves with the shape when transfer is perfect. At
small proxies it is not: a family's ladder (``ladder.py``) measures, per hyperparameter,
the drift the rules leave over (for example, the global LR optimum of a CompleteP model
moving up by about half an octave from depth 2 to depth 8), and whether a per-module
value settles across widths at all. ``extrapolate_with_ladder`` uses both:

1. **Drift.** A hyperparameter with a fitted drift is carried to the target by the rule
   *and* the fit: its base value is multiplied by ``Π (target/base)^exponent`` before the
   rules apply. Only a ``drifts`` verdict is applied: ``transfers`` means the rules
   suffice, and a fit whose interval still covers 0 (``insufficient-data``, or a fit
   through exactly as many studies as it has coefficients) is a guess that the plain
   rule, the value CompleteP and µP validated, is better placed to make: two noisy
   width rungs of a per-module search once moved the init std and the readout
   multiplier by half an octave each on such a guess. A per-role name without a fit of
   its own (``lr.hidden.attn_qkv``) takes the drift of its bare name (``lr``): the global
   LR's drift moves every LR with it.
2. **Verdicts.** A per-role value found by a per-module study is handed out only when the
   ladder says it ``transfers``. When it drifts or the data cannot tell, the role is kept
   at its global value (from the parent study the per-module study refined, or the
   study's own bare value) and the rule entry says so. A per-module gain found at a tiny
   proxy can vanish, or turn into a loss, at the target; the global value never loses
   to itself.

Every change shows in the ``rules`` entry of the parameter (``ladder: ...``), and the
``proxy_value``/``factor`` of the entry stay relative to the trial's own value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hpo_service.domain.shape import ModelShape
from hpo_service.domain.space import ParamValue
from hpo_service.scaling.config import ScaleConfig, validate_scale
from hpo_service.scaling.extrapolate import (
    ExtrapolationResult,
    RuleEntry,
    extrapolate,
    resolve_target,
)
from hpo_service.scaling.ladder import LadderReport, ParameterDrift
from hpo_service.scaling.naming import parse_name

__all__ = ["extrapolate_with_ladder"]


def _number(value: ParamValue | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fitted(drift: ParameterDrift | None) -> ParameterDrift | None:
    """The drift to apply: a fit that shows a move the rules do not explain (``drifts``)."""
    if drift is None or not drift.exponents or drift.verdict != "drifts":
        return None
    return drift


def _scaled(hparam: str, value: float, factor: float) -> float:
    """``value`` moved by the drift ``factor``; betas move on 1 − β, as they are fitted."""
    if hparam in ("beta1", "beta2"):
        return 1.0 - (1.0 - value) * factor
    return value * factor


def _global_value(
    name: str, hparam: str, own: Mapping[str, ParamValue], parent: Mapping[str, ParamValue]
) -> tuple[float, str] | None:
    """The global value a per-role ``name`` falls back to, and where it came from."""
    for source, where in ((parent, "the parent study's"), (own, "this trial's")):
        for key in (name, hparam) if source is parent else (hparam,):
            value = _number(source.get(key))
            if value is not None:
                return value, f"{where} '{key}'"
    return None


def extrapolate_with_ladder(
    params: Mapping[str, ParamValue],
    scale: ScaleConfig | Mapping[str, Any],
    target: Mapping[str, Any] | ModelShape | None,
    report: LadderReport,
    *,
    parent_params: Mapping[str, ParamValue] | None = None,
    params_loc: tuple[str | int, ...] = ("params",),
) -> ExtrapolationResult:
    """``extrapolate`` with the family ladder's drifts and transfer verdicts applied.

    Args:
        params: the trial's values at the study's base shape.
        scale: the study's ``scale`` config.
        target: target axes (omitted ones default to the proxy's).
        report: the family's ladder diagnostics.
        parent_params: the global values this per-module study refined (its parent's
            trial), used for roles whose per-module value the ladder does not support.
        params_loc: error location of the parameters.

    Returns:
        The extrapolation, with the changed entries' rules saying what the ladder did.
    """
    config = validate_scale(scale)
    assert config is not None
    tgt = resolve_target(config, target)
    base = config.base_shape
    drifts = {d.param: d for d in report.parameters}
    parent = dict(parent_params or {})
    adjusted: dict[str, ParamValue] = dict(params)
    notes: dict[str, str] = {}
    for name, value in params.items():
        number = _number(value)
        try:
            parsed = parse_name(name)
        except ValueError:
            continue
        if number is None or parsed.hparam is None or parsed.kind == "unknown":
            continue
        note = ""
        source_drift = _fitted(drifts.get(name))
        own = drifts.get(name)
        if parsed.kind == "role" and (own is None or own.verdict != "transfers"):
            fallback = _global_value(name, parsed.hparam, params, parent)
            if fallback is not None:
                number, origin = fallback
                verdict = own.verdict if own is not None else "not on the ladder"
                note = (
                    f"kept at the global value ({origin}): the ladder does not show that "
                    f"{name} transfers ({verdict})"
                )
                source_drift = None
        drift = source_drift or (
            _fitted(drifts.get(parsed.hparam)) if parsed.kind == "role" else None
        )
        if drift is not None:
            factor = drift.drift_factor(base, tgt)
            number = _scaled(parsed.hparam, number, factor)
            moves = " · ".join(f"{a}^{b:+.2f}" for a, b in drift.exponents.items())
            note = (note + "; " if note else "") + (
                f"fitted drift of '{drift.param}' ({moves}, verdict {drift.verdict}): "
                f"× {factor:.3g} on top of the rule"
            )
        if note:
            adjusted[name] = number
            notes[name] = note
    result = extrapolate(adjusted, config, tgt.axes(), params_loc=params_loc)
    if not notes:
        return result
    return result.model_copy(update={"rules": _annotated(result.rules, params, notes)})


def _annotated(
    rules: list[RuleEntry], params: Mapping[str, ParamValue], notes: Mapping[str, str]
) -> list[RuleEntry]:
    """Rules whose entries for ``notes`` say what the ladder did, relative to the trial."""
    out: list[RuleEntry] = []
    for rule in rules:
        origin = _origin(rule, notes)
        if origin is None:
            out.append(rule)
            continue
        original = params[origin]
        target = rule.target_value
        factor = rule.factor
        if (o := _number(original)) and (t := _number(target)) is not None and o != 0:
            factor = t / o
        out.append(
            rule.model_copy(
                update={
                    "proxy_value": original,
                    "factor": factor if math.isfinite(factor) else rule.factor,
                    "rule": f"{rule.rule}; ladder: {notes[origin]}",
                }
            )
        )
    return out


def _origin(rule: RuleEntry, notes: Mapping[str, str]) -> str | None:
    """The trial parameter behind a rule entry (itself, or the bare name it expanded)."""
    if rule.param in notes:
        return rule.param
    prefix = "expanded from bare '"
    if rule.rule.startswith(prefix):
        bare = rule.rule[len(prefix) :].split("'", 1)[0]
        return bare if bare in notes else None
    return None
