"""Map hyperparameters tuned at the proxy to the values a target shape should use.

Pure functions over the rule tables of ``rules.py``. The response mirrors API.md
("Transfer and scale"): ``params`` holds absolute target values under the trial's names
(bare role-dependent names expanded to ``<hparam>.<role>``), ``rules`` explains every factor
with its formula, source and evidence tag, and ``warnings`` says where the rules are
uncertain or the target lies outside what the sources showed. Nothing is guessed silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hpo_service.domain.shape import SHAPE_AXES, ModelShape, parse_shape
from hpo_service.domain.space import ParamValue
from hpo_service.errors import FieldError, InvalidInputError
from hpo_service.scaling.config import ScaleConfig, validate_scale
from hpo_service.scaling.naming import expansion_roles, lookup_rule, parse_name
from hpo_service.scaling.rules import DEPTH_ALPHA, Rule, RuleTable, build_table

__all__ = [
    "ExtrapolationResult",
    "Multipliers",
    "RuleEntry",
    "ScaledValue",
    "extrapolate",
    "interpolate_depth",
    "resolve_target",
    "scale_value",
    "shape_multipliers",
]

# TP5 §6.1: LM transfer was shown from proxies of at least these sizes.
_MIN_WIDTH, _MIN_DEPTH, _MIN_STEPS = 256, 4, 5000
# The largest ratios in the cited experiments (CompleteP: 2→128 layers; TP5: 256→8192 wide).
_MAX_RATIO = 64.0
# Complete(d)P showed batch transfer from 1/8× to 4× under the square-root rule.
_BATCH_RANGE = (1 / 8, 4.0)


class RuleEntry(BaseModel):
    """How one target value was obtained."""

    model_config = ConfigDict(frozen=True)

    param: str
    proxy_value: ParamValue
    target_value: ParamValue
    factor: float
    rule: str


class Multipliers(BaseModel):
    """Target / base ratios along the four main axes (1 where an axis is not given)."""

    model_config = ConfigDict(frozen=True)

    width: float
    depth: float
    batch: float
    duration: float


class ExtrapolationResult(BaseModel):
    """The body of ``POST /v1/studies/{id}/extrapolate`` (API.md)."""

    model_config = ConfigDict(frozen=True)

    parameterization: str
    proxy: dict[str, int]
    target: dict[str, int]
    multipliers: Multipliers
    params: dict[str, ParamValue]
    rules: list[RuleEntry]
    warnings: list[str]
    implied: dict[str, float] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready response body."""
        return self.model_dump(mode="json")


def shape_multipliers(base: ModelShape, target: ModelShape) -> dict[str, float]:
    """Ratios m_N, m_L, m_B, m_D, m_F of ``target`` over ``base`` (1 when either lacks it).

    ``ffn`` is the ratio of the expert-width fraction (expert width / width), the MoE
    granularity axis of the W_down rule.
    """

    def ratio(a: int | None, b: int | None) -> float:
        return 1.0 if a is None or b is None else b / a

    ffn = 1.0
    if base.expert_width is not None and target.expert_width is not None:
        ffn = (target.expert_width / target.width) / (base.expert_width / base.width)
    return {
        "width": ratio(base.width, target.width),
        "depth": ratio(base.depth, target.depth),
        "batch": ratio(base.batch_size, target.batch_size),
        "duration": ratio(base.tokens, target.tokens),
        "ffn": ffn,
    }


def resolve_target(
    config: ScaleConfig,
    target: Mapping[str, Any] | ModelShape | None,
    *,
    loc: Sequence[str | int] = ("body", "target"),
) -> ModelShape:
    """Complete a target shape: omitted axes default to the proxy's.

    An omitted ``expert_width`` keeps the proxy's expert-width fraction, so a wider target
    does not silently change granularity.

    Raises:
        InvalidInputError: unknown axes, invalid sizes, an axis the base shape lacks, or
            experts on a dense parameterisation.
    """
    loc = tuple(loc)
    given: dict[str, Any] = target.axes() if isinstance(target, ModelShape) else dict(target or {})
    errors = [
        FieldError((*loc, k), f"unknown shape axis {k!r}; known: {', '.join(SHAPE_AXES)}")
        for k in given
        if k not in SHAPE_AXES
    ]
    base = config.base_shape
    for axis in given:
        if axis in SHAPE_AXES and getattr(base, axis) is None and given[axis] is not None:
            errors.append(
                FieldError(
                    (*loc, axis),
                    f"the study's proxy shape has no {axis}: cannot compute a multiplier along it",
                )
            )
    if not config.is_moe and given.get("experts") is not None:
        errors.append(FieldError((*loc, "experts"), "experts only apply to moe_mup studies"))
    if errors:
        raise InvalidInputError("invalid target shape", errors)
    merged: dict[str, Any] = config.proxy.axes()
    merged.update({k: v for k, v in given.items() if v is not None})
    proxy = config.proxy
    if "expert_width" not in given and proxy.expert_width is not None:
        merged["expert_width"] = max(1, round(proxy.expert_width * merged["width"] / proxy.width))
    if "active_experts" not in given and proxy.active_experts is not None:
        merged["active_experts"] = min(proxy.active_experts, merged.get("experts", 1))
    return parse_shape(merged, loc)


@dataclass(frozen=True)
class ScaledValue:
    """One hyperparameter mapped to another shape."""

    value: float
    factor: float
    rule: Rule
    known: bool


def scale_value(
    table: RuleTable, hparam: str, role: str | None, value: float, m: Mapping[str, float]
) -> ScaledValue:
    """Apply the table's rule for ``hparam`` at ``role`` to a base ``value``.

    ``init_std`` scales by the square root of the variance factor; ``beta1``/``beta2`` scale
    (1 − β) by the factor. ``factor`` is always the multiplier of the scaled quantity.
    """
    rule, known = lookup_rule(table, hparam, role)
    exps = rule.exponents.scaled(0.5) if hparam == "init_std" else rule.exponents
    factor = exps.factor(m)
    if hparam in ("beta1", "beta2"):
        return ScaledValue(1.0 - (1.0 - value) * factor, factor, rule, known)
    return ScaledValue(value * factor, factor, rule, known)


def interpolate_depth(values: Sequence[float], depth: int) -> list[float]:
    """Linearly interpolate per-block multipliers over relative depth to ``depth`` blocks.

    Block ``j`` of ``depth`` sits at relative position j/(depth−1) ∈ [0, 1], as do the
    base blocks, so the first and last blocks keep their values.
    """
    if len(values) == 1 or depth == 1:
        return [float(np.mean(values))] * depth if len(values) > 1 else [values[0]] * depth
    xs = np.linspace(0.0, 1.0, len(values))
    return [float(v) for v in np.interp(np.linspace(0.0, 1.0, depth), xs, values)]


def extrapolate(
    params: Mapping[str, ParamValue],
    scale: ScaleConfig | Mapping[str, Any],
    target: Mapping[str, Any] | ModelShape | None,
    *,
    target_loc: Sequence[str | int] = ("body", "target"),
    params_loc: Sequence[str | int] = ("params",),
) -> ExtrapolationResult:
    """Map a trial's base values to the values to use at ``target``.

    Args:
        params: the trial's parameters (values at the base shape, usually the proxy).
        scale: the study's ``scale`` config (validated here if given raw).
        target: target axes; omitted ones default to the proxy's.
        target_loc: error location of the target in the request.
        params_loc: error location of the parameters.

    Returns:
        The API response body.

    Raises:
        InvalidInputError: bad target, unknown role, non-numeric value of a scaling
            hyperparameter, or incomplete ``lr_depth`` multipliers.
    """
    config = validate_scale(scale)
    assert config is not None  # a Mapping never validates to None
    tgt = resolve_target(config, target, loc=target_loc)
    base = config.base_shape
    m = shape_multipliers(base, tgt)
    table = build_table(config.parameterization, config.readout, config.optimizer)
    out = _Builder(table, m)
    ploc = tuple(params_loc)
    depth_values: dict[int, float] = {}
    for name, value in params.items():
        try:
            parsed = parse_name(name)
        except ValueError as exc:
            raise InvalidInputError.at((*ploc, name), str(exc)) from None
        if parsed.kind == "unknown":
            out.passthrough(name, value)
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidInputError.at((*ploc, name), f"{name} must be a number, got {value!r}")
        number = float(value)
        if parsed.kind == "depth" and parsed.index is not None:
            depth_values[parsed.index] = number
        elif parsed.kind == "bare" and parsed.hparam is not None:
            for role in expansion_roles(parsed.hparam, config.is_moe):
                key = f"{parsed.hparam}.{role}"
                if key not in params:
                    out.scaled(key, parsed.hparam, role, number, source=name)
        else:
            assert parsed.hparam is not None
            out.scaled(name, parsed.hparam, parsed.role, number)
    if depth_values:
        _depth_multipliers(out, depth_values, base, tgt, ploc)
    _implied(out, config, params, base, tgt, m)
    warnings = _warnings(config, base, tgt, m, out)
    return ExtrapolationResult(
        parameterization=config.parameterization,
        proxy=config.proxy.axes(),
        target=tgt.axes(),
        multipliers=Multipliers(
            width=m["width"], depth=m["depth"], batch=m["batch"], duration=m["duration"]
        ),
        params=out.params,
        rules=out.rules,
        warnings=warnings,
        implied=out.implied_values,
    )


class _Builder:
    """Accumulates target values, rule entries and notes while walking the parameters."""

    def __init__(self, table: RuleTable, m: Mapping[str, float]) -> None:
        self.table = table
        self.m = m
        self.params: dict[str, ParamValue] = {}
        self.rules: list[RuleEntry] = []
        self.implied_values: dict[str, float] = {}
        self.uncertain: list[str] = []
        self.clipped: list[str] = []

    def scaled(
        self, key: str, hparam: str, role: str | None, value: float, source: str | None = None
    ) -> None:
        sv = scale_value(self.table, hparam, role, value, self.m)
        new = sv.value
        if hparam in ("beta1", "beta2") and not 0.0 <= new < 1.0:
            new = min(max(new, 0.0), 1.0 - 1e-12)
            self.clipped.append(key)
        text = f"{key}: {sv.rule.describe()}"
        if hparam == "init_std":
            text = f"{key}: std × √(variance factor); variance {sv.rule.describe()}"
        elif hparam in ("beta1", "beta2"):
            text = f"{key}: (1−β) {sv.rule.describe()}"
        if source is not None:
            text = f"expanded from bare '{source}'; {text}"
        if sv.rule.confidence == "U" or not sv.known:
            self.uncertain.append(key)
        self.params[key] = new
        self.rules.append(
            RuleEntry(param=key, proxy_value=value, target_value=new, factor=sv.factor, rule=text)
        )

    def passthrough(self, name: str, value: ParamValue) -> None:
        self.unchanged(name, value, "not a scaling hyperparameter: unchanged")

    def unchanged(self, name: str, value: ParamValue, rule: str) -> None:
        """``name`` keeps ``value`` at the target (factor 1), for the reason ``rule``."""
        self.params[name] = value
        self.rules.append(
            RuleEntry(param=name, proxy_value=value, target_value=value, factor=1.0, rule=rule)
        )

    def implied(self, name: str, base: float, hparam: str) -> None:
        sv = scale_value(self.table, hparam, None if hparam != "mult" else "readout", base, self.m)
        self.implied_values[name] = sv.value
        self.rules.append(
            RuleEntry(
                param=name,
                proxy_value=base,
                target_value=sv.value,
                factor=sv.factor,
                rule=f"implied, not a trial parameter (apply it in the model): "
                f"{sv.rule.describe()}",
            )
        )


def _depth_multipliers(
    out: _Builder,
    values: Mapping[int, float],
    base: ModelShape,
    tgt: ModelShape,
    ploc: tuple[str | int, ...],
) -> None:
    depth = base.depth
    if depth is None or sorted(values) != list(range(depth)):
        raise InvalidInputError.at(
            (*ploc, "lr_depth"),
            f"lr_depth.<i> must be given for every block 0..{(depth or 1) - 1} of the proxy",
        )
    ordered = [values[i] for i in range(depth)]
    new = interpolate_depth(ordered, tgt.depth or depth)
    for j, v in enumerate(new):
        out.unchanged(
            f"lr_depth.{j}",
            v,
            "per-depth LR multiplier linearly interpolated over relative depth "
            "(Complete(d)P factorised form) [S]",
        )


def _implied(
    out: _Builder,
    config: ScaleConfig,
    params: Mapping[str, ParamValue],
    base: ModelShape,
    tgt: ModelShape,
    m: Mapping[str, float],
) -> None:
    if config.parameterization in DEPTH_ALPHA and "residual_mult" not in params:
        out.implied("residual_mult", 1.0, "residual_mult")
    mup_like = config.parameterization != "sp"
    if mup_like and config.readout == "multiplier" and "mult.readout" not in params:
        out.implied("mult.readout", 1.0, "mult")
    if base.steps is not None and tgt.steps is not None:
        sv = scale_value(out.table, "iterations", None, float(base.steps), m)
        out.rules.append(
            RuleEntry(
                param="iterations",
                proxy_value=base.steps,
                target_value=tgt.steps,
                factor=tgt.steps / base.steps,
                rule=f"iterations = tokens / batch_size: {sv.rule.describe()}",
            )
        )


def _warnings(
    config: ScaleConfig, base: ModelShape, tgt: ModelShape, m: Mapping[str, float], out: _Builder
) -> list[str]:
    w: list[str] = []
    p = config.parameterization
    moved = {k for k, v in m.items() if not math.isclose(v, 1.0)}
    if config.base is not None and config.base != config.proxy:
        w.append(f"values are expressed at the base shape {base.axes()}, not the proxy's")
    if p == "sp" and moved & {"width", "depth"}:
        w.append(
            "sp has no width or depth rule: values are kept as they are, and SP optima "
            "are known to drift with width (TP5 Fig. 1); consider mup or completep"
        )
    if p in ("sp", "mup") and "depth" in moved:
        w.append(
            f"{p} has no depth rule: depth transfer was seen only empirically for "
            "pre-LN Transformers (TP5 §6.1); use depth_mup or completep"
        )
    if p != "completedp" and moved & {"batch", "duration"}:
        w.append(
            f"{p} has no batch or duration rule: LR, ε, WD and β are kept; completedp "
            "scales them by the SDE rule"
        )
    if p == "completedp":
        if not _BATCH_RANGE[0] <= m["batch"] <= _BATCH_RANGE[1]:
            w.append(
                f"batch multiplier {m['batch']:g} is outside the 1/8×–4× range where "
                "Complete(d)P showed the square-root batch rule to hold"
            )
        if "duration" in moved:
            w.append(
                "the duration exponent ½ comes from the SDE argument; Marin fitted ≈0.28 "
                "for the LR (research §4) [S], so long-horizon targets are uncertain"
            )
    if p == "depth_mup" and "depth" in moved:
        w.append(
            "depth-µP (α=½) transfer is reported to degrade with ≥2 layers per residual "
            "block unless QK-norm is used (TP6, Complete(d)P) [S]"
        )
    if moved:
        small = []
        if base.width < _MIN_WIDTH:
            small.append(f"width {base.width} < {_MIN_WIDTH}")
        if base.depth is not None and base.depth < _MIN_DEPTH:
            small.append(f"depth {base.depth} < {_MIN_DEPTH}")
        if base.steps is not None and base.steps < _MIN_STEPS:
            small.append(f"{base.steps} steps < {_MIN_STEPS}")
        if small:
            w.append(
                "proxy below the minimum where µP transfer was shown (TP5 §6.1): "
                + ", ".join(small)
            )
    for axis in ("width", "depth"):
        if m[axis] > _MAX_RATIO:
            w.append(
                f"{axis} multiplier {m[axis]:g} exceeds {_MAX_RATIO:g}×, beyond the "
                "largest ratios in the cited experiments"
            )
    if config.is_moe:
        w.extend(_moe_warnings(base, tgt))
    if config.optimizer in ("lion", "sophia"):
        w.append(f"{config.optimizer}: treated as Adam-like; its µP rules are unverified [U]")
    if config.optimizer == "muon" and "depth" in moved:
        w.append("muon under depth scaling is unverified: the AdamW block-LR rule was used [U]")
    if out.uncertain:
        w.append(
            "unverified or missing rules (kept or applied with evidence U): "
            + ", ".join(out.uncertain)
        )
    if out.clipped:
        w.append("(1−β) rule left [0, 1) and was clipped: " + ", ".join(out.clipped))
    return w


def _moe_warnings(base: ModelShape, tgt: ModelShape) -> list[str]:
    w: list[str] = []
    if base.experts and tgt.experts and base.active_experts and tgt.active_experts:
        k0, k1 = base.active_experts / base.experts, tgt.active_experts / tgt.experts
        if not math.isclose(k0, k1):
            w.append(
                f"sparsity a/E changes ({k0:g} → {k1:g}): hyperparameters do not transfer "
                "across a/E (2601.20205) [S]; re-tune at the target sparsity"
            )
    if base.expert_width and tgt.expert_width:
        g0, g1 = base.expert_width / base.width, tgt.expert_width / tgt.width
        if not math.isclose(g0, g1):
            w.append(
                f"expert granularity changes ({g0:g} → {g1:g} of width): LR transfer broke "
                "across granularity in Małaśnicki et al. [S]; the W_down rule of "
                "2601.20205 was applied [S]"
            )
    return w
