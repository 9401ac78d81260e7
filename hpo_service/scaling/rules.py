"""The parameterisations as data: exponents of the scale multipliers per role and hyperparameter.

Every rule says how a hyperparameter tuned at the base shape changes at another shape::

    value_target = value_base · m_N^a · m_L^b · m_B^c · m_D^d · m_F^f

with m_N = width ratio, m_L = depth ratio, m_B = batch ratio, m_D = duration ratio and
m_F = ratio of the expert-width fraction (expert width / width). For ``beta1``/``beta2`` the
rule applies to (1 − β); for ``init_var`` the factor is the variance factor (``init_std``
takes its square root). The numbers come from ``research/scaling-rules.md`` (§1, §1a, §3–§6)
and each entry keeps its source and evidence tag:

- ``V`` checked against a primary source (paper table or official code),
- ``S`` from a secondary source citing the paper,
- ``D`` derived from µP arguments, stated by no source,
- ``U`` unverified.

A parameterisation's table is assembled from a width part (SP, or µP in one of two readout
flavours), optional overrides (MoE, Muon), a depth part (α = ½ or 1) and, for
Complete(d)P, the batch/duration (SDE) part. Depth and SDE parts multiply onto the width
rule; overrides replace it. No code decides a factor: only these tables do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "AXIS_SYMBOLS",
    "CONFIDENCE_ORDER",
    "DEPTH_ALPHA",
    "GLOBAL_HPARAMS",
    "OPTIMIZERS",
    "PARAMETERIZATIONS",
    "READOUTS",
    "ROLES",
    "ROLE_HPARAMS",
    "Confidence",
    "Exponents",
    "Rule",
    "RuleTable",
    "Scaled",
    "build_table",
    "weakest",
]

Confidence = Literal["V", "S", "D", "U"]
CONFIDENCE_ORDER: tuple[Confidence, ...] = ("V", "S", "D", "U")

PARAMETERIZATIONS = ("sp", "mup", "depth_mup", "completep", "completedp", "moe_mup")
READOUTS = ("multiplier", "init")
OPTIMIZERS = ("adamw", "muon", "lion", "sophia")

ROLES = (
    "embedding",
    "hidden",
    "readout",
    "router",
    "bias",
    "norm",
    "qk_norm",
    "final_norm",
    "expert_bias",
    "attn",
)
"""Module roles a parameter name may address (``<hparam>.<role>[.<sub>]``)."""

ROLE_HPARAMS = ("lr", "init_std", "init_var", "wd", "eps", "beta1", "beta2", "mult")
"""Hyperparameters that are set per role."""

GLOBAL_HPARAMS = ("residual_mult", "warmup_frac", "iterations")
"""Hyperparameters without a role (``beta1``/``beta2`` may be either)."""

# Residual exponent α per depth-aware parameterisation (research §3; MoE-µP builds on CompleteP).
DEPTH_ALPHA: dict[str, float] = {
    "depth_mup": 0.5,
    "completep": 1.0,
    "completedp": 1.0,
    "moe_mup": 1.0,
}

AXIS_SYMBOLS = {"width": "m_N", "depth": "m_L", "batch": "m_B", "duration": "m_D", "ffn": "m_F"}

# Internal hyperparameter keys of the tables: ``init_std`` is derived from ``init_var``,
# and both betas use the (1 − β) rule stored under ``one_minus_beta``.
Scaled = Literal[
    "lr",
    "init_var",
    "wd",
    "eps",
    "mult",
    "one_minus_beta",
    "residual_mult",
    "warmup_frac",
    "iterations",
]


def weakest(*tags: Confidence) -> Confidence:
    """The least certain of several evidence tags (V < S < D < U in doubt)."""
    return max(tags, key=CONFIDENCE_ORDER.index)


@dataclass(frozen=True)
class Exponents:
    """Exponents of (m_N, m_L, m_B, m_D, m_F) in a multiplicative rule."""

    width: float = 0.0
    depth: float = 0.0
    batch: float = 0.0
    duration: float = 0.0
    ffn: float = 0.0

    def __add__(self, other: Exponents) -> Exponents:
        return Exponents(
            self.width + other.width,
            self.depth + other.depth,
            self.batch + other.batch,
            self.duration + other.duration,
            self.ffn + other.ffn,
        )

    def scaled(self, k: float) -> Exponents:
        """Every exponent times ``k`` (``k = ½`` turns a variance rule into a std rule)."""
        return Exponents(
            self.width * k, self.depth * k, self.batch * k, self.duration * k, self.ffn * k
        )

    def factor(self, m: Mapping[str, float]) -> float:
        """The multiplier for axis ratios ``m`` (keys as ``AXIS_SYMBOLS``; missing = 1)."""
        out = 1.0
        for axis, e in self.items():
            if e:
                out *= float(m.get(axis, 1.0)) ** e
        return out

    def items(self) -> list[tuple[str, float]]:
        """(axis, exponent) pairs in a fixed order."""
        return [
            ("width", self.width),
            ("depth", self.depth),
            ("batch", self.batch),
            ("duration", self.duration),
            ("ffn", self.ffn),
        ]

    def formula(self) -> str:
        """The factor as text, e.g. ``m_N^-1 · (m_B)^0.5``; ``1`` when every exponent is 0."""
        parts = [f"{AXIS_SYMBOLS[a]}^{_num(e)}" for a, e in self.items() if e]
        return " · ".join(parts) if parts else "1"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Rule:
    """One table entry: a factor's exponents, where it comes from and how sure it is."""

    exponents: Exponents
    sources: tuple[str, ...]
    confidence: Confidence

    def then(self, other: Rule) -> Rule:
        """Compose two rules multiplicatively (exponents add, sources accumulate)."""
        return Rule(
            self.exponents + other.exponents,
            self.sources + other.sources,
            weakest(self.confidence, other.confidence),
        )

    def describe(self) -> str:
        """Formula, then each source with the combined evidence tag."""
        return f"× {self.exponents.formula()} — {'; '.join(self.sources)} [{self.confidence}]"


RuleTable = dict[tuple[str, str], Rule]
"""(hyperparameter key, role) → rule. Role ``*`` marks a global hyperparameter."""


def _r(source: str, conf: Confidence, **exps: float) -> Rule:
    return Rule(Exponents(**exps), (source,), conf)


# ---- width parts ------------------------------------------------------------------------

_SP = "SP (PyTorch default: init ∝ 1/fan_in, one global LR)"
_SP_WIDTH: RuleTable = {
    ("init_var", "embedding"): _r(_SP + ": N(0,1) embedding", "V"),
    ("init_var", "hidden"): _r(_SP, "V", width=-1),
    ("init_var", "readout"): _r(_SP, "V", width=-1),
    ("init_var", "router"): _r(_SP, "V", width=-1),
    **{
        ("init_var", role): _r(_SP + ": gains 1, biases 0", "V")
        for role in ("bias", "norm", "qk_norm", "final_norm", "expert_bias")
    },
    **{("lr", role): _r(_SP, "V") for role in ROLES if role != "attn"},
    **{("wd", role): _r(_SP, "V") for role in ROLES if role != "attn"},
    **{("eps", role): _r(_SP, "V") for role in ROLES if role != "attn"},
    **{("mult", role): _r(_SP, "V") for role in ROLES},
}

_T5 = "TP5 Tables 3/8"
_CP = "CompleteP Table 1"
_MUP_COMMON: RuleTable = {
    ("init_var", "embedding"): _r(_T5 + ": input weights init ×1", "V"),
    ("lr", "embedding"): _r(_T5 + ": input weights Adam LR ×1", "V"),
    ("wd", "embedding"): _r(_CP + ": embedding WD ×1", "V"),
    ("eps", "embedding"): _r("mup package / " + _CP + ": embedding ε unscaled", "V"),
    ("mult", "embedding"): _r(_T5 + ": input multiplier α_in constant", "V"),
    ("init_var", "hidden"): _r(_T5 + ": hidden init var ∝ 1/fan_in", "V", width=-1),
    ("lr", "hidden"): _r(_T5 + ": hidden Adam LR ∝ 1/fan_in", "V", width=-1),
    ("wd", "hidden"): _r(_CP + ": hidden WD × m_N keeps ηλ width-invariant", "V", width=1),
    ("eps", "hidden"): _r(_CP + ": hidden ε × m_N⁻¹", "V", width=-1),
    ("mult", "hidden"): _r(_T5 + ": hidden multiplier constant", "V"),
    ("init_var", "bias"): _r(_T5 + ": biases init 0 or constant", "V"),
    ("lr", "bias"): _r(_T5 + ": bias Adam LR ×1", "V"),
    ("wd", "bias"): _r(_CP + ": bias WD unscaled (usually 0)", "V"),
    ("eps", "bias"): _r(_CP + ": bias ε × m_N⁻¹", "V", width=-1),
    ("init_var", "norm"): _r(_CP + ": norm gains init 1", "V"),
    ("lr", "norm"): _r(_T5 + ": norm-gain Adam LR ×1", "V"),
    ("wd", "norm"): _r(_CP + ": norm WD unscaled (usually 0)", "V"),
    ("eps", "norm"): _r(_CP + ": norm ε × m_N⁻¹", "V", width=-1),
    ("mult", "norm"): _r(_T5, "V"),
    ("init_var", "qk_norm"): _r("Complete(d)P Table 1: QK-norm gains init 1", "V"),
    ("lr", "qk_norm"): _r("Complete(d)P Table 1: QK-norm LR no width factor", "V"),
    ("wd", "qk_norm"): _r("Complete(d)P Table 1", "V"),
    ("eps", "qk_norm"): _r("Complete(d)P Table 1: QK-norm ε no width factor (shared)", "V"),
    ("init_var", "final_norm"): _r(_CP + ": final norm init 1", "V"),
    ("lr", "final_norm"): _r(_CP + ": final norm LR ×1", "V"),
    ("wd", "final_norm"): _r(_CP, "V"),
    ("init_var", "expert_bias"): _r("2601.20205: expert bias Θ(1)", "S"),
    ("lr", "expert_bias"): _r("2601.20205: expert-bias LR Θ(1)", "S"),
    ("mult", "attn"): _r(
        "TP5 Def. 4.1: logits use mult.attn / d_head (SP: 1/√d_head); mult.attn constant", "V"
    ),
}

_T8 = "TP5 Table 8 (readout multiplier flavour)"
_MUP_T8: RuleTable = {
    **_MUP_COMMON,
    ("init_var", "readout"): _r(_T8 + ": readout init var constant", "V"),
    ("mult", "readout"): _r(_T8 + ": readout multiplier α_out / m_N", "V", width=-1),
    ("lr", "readout"): _r(_T8 + ": readout Adam LR ×1", "V"),
    ("wd", "readout"): _r("mup MuAdamW: vector-like tensors keep WD", "V"),
    ("eps", "readout"): _r(
        "rules §3: readout gradient Θ(1/n) under the 1/m_N multiplier", "D", width=-1
    ),
    ("eps", "final_norm"): _r("rules §3: final-norm gradient Θ(1/n) under T8", "D", width=-1),
    ("init_var", "router"): _r(_T8 + " applied to the d→E router (output-like)", "D"),
    ("mult", "router"): _r(_T8 + " applied to the d→E router (output-like)", "D", width=-1),
    ("lr", "router"): _r(_T8 + " applied to the d→E router (output-like)", "D"),
}

_T3 = "TP5 Table 3 / Complete(d)P Table 1 (readout init flavour)"
_MUP_T3: RuleTable = {
    **_MUP_COMMON,
    ("init_var", "readout"): _r(_T3 + ": readout init var × m_N⁻²", "V", width=-2),
    ("mult", "readout"): _r(_T3 + ": no readout multiplier", "V"),
    ("lr", "readout"): _r(_T3 + ": readout Adam LR × m_N⁻¹", "V", width=-1),
    ("wd", "readout"): _r(_T3 + ": readout WD × m_N", "V", width=1),
    ("eps", "readout"): _r(_T3 + ": readout ε ×1", "V"),
    ("eps", "final_norm"): _r("Complete(d)P Table 1 (ambiguous 'output norms' row)", "U"),
    ("init_var", "router"): _r(_T3 + " applied to the d→E router (output-like)", "D", width=-2),
    ("mult", "router"): _r(_T3 + " applied to the d→E router", "D"),
    ("lr", "router"): _r(_T3 + " applied to the d→E router (output-like)", "D", width=-1),
}

# ---- overrides -------------------------------------------------------------------------

_MOE = "2601.20205 (µP for MoE, via re-derivation)"
_MOE_OVERRIDES: RuleTable = {
    ("init_var", "router"): _r(_MOE + ": router init std n^-1", "S", width=-2),
    ("mult", "router"): _r(_MOE + ": no router multiplier", "S"),
    ("lr", "router"): _r(_MOE + ": router Adam LR ∝ 1/n, independent of E", "S", width=-1),
    ("init_var", "hidden.expert_up"): _r(_MOE + ": W_up σ = n^-½", "S", width=-1),
    ("lr", "hidden.expert_up"): _r(_MOE + ": W_up LR ∝ 1/n", "S", width=-1),
    ("init_var", "hidden.expert_down"): _r(
        _MOE + ": W_down mean-field σ = α_ffn⁻¹ n^-½", "S", width=-1, ffn=-2
    ),
    ("lr", "hidden.expert_down"): _r(_MOE + ": W_down LR ∝ 1/(α_ffn n)", "S", width=-1, ffn=-1),
}

_MUON = "KellerJordan/Muon: NS5 update × √max(1, fan_out/fan_in), LR with built-in µP"
_MUON_OVERRIDES: RuleTable = {
    ("lr", "hidden"): _r(_MUON + ": hidden LR constant in width", "V"),
    ("wd", "hidden"): _r("p ← p(1 − ηλ) with η width-invariant keeps λ constant", "D"),
    ("eps", "hidden"): _r("Muon hidden matrices use no ε (value kept)", "V"),
}

# ---- depth part (multiplies onto width) -------------------------------------------------

_BLOCK_ROLES = ("hidden", "bias", "norm", "qk_norm")


def _depth_part(alpha: float) -> RuleTable:
    src = "CompleteP Table 1" if alpha == 1.0 else "TP6 / CompleteP Table 1 (α=½)"
    table: RuleTable = {}
    for role in _BLOCK_ROLES:
        table[("lr", role)] = _r(
            f"{src}: block LR × m_L^(α−1), α={_num(alpha)}", "V", depth=alpha - 1
        )
        table[("eps", role)] = _r(f"{src}: block ε × m_L^−α", "V", depth=-alpha)
    table[("residual_mult", "*")] = _r(f"{src}: residual branch × m_L^−α", "V", depth=-alpha)
    return table


_MUON_DEPTH = _r("Muon under depth scaling (same block LR rule assumed)", "U")

# ---- batch/duration part (Complete(d)P, SDE view) ----------------------------------------

_SDE = "Complete(d)P Table 1 (SDE batch/duration rule)"


def _sde_part() -> RuleTable:
    table: RuleTable = {}
    for role in ROLES:
        if role == "attn":
            continue
        table[("lr", role)] = _r(_SDE + ": LR × √(m_B/m_D)", "V", batch=0.5, duration=-0.5)
        table[("wd", role)] = _r(_SDE + ": WD × √(m_B/m_D)", "V", batch=0.5, duration=-0.5)
        table[("eps", role)] = _r(_SDE + ": ε × √(m_D/m_B)", "V", batch=-0.5, duration=0.5)
    table[("one_minus_beta", "*")] = _r(_SDE + ": (1−β) × m_B/m_D", "V", batch=1, duration=-1)
    return table


_COMPLETEDP_WIDTH: RuleTable = {
    ("eps", "embedding"): _r(
        "Complete(d)P Table 1: embedding ε × m_N⁻¹ (fix to CompleteP)", "V", width=-1
    ),
}

_GLOBAL_BASE: RuleTable = {
    ("residual_mult", "*"): _r("no depth rule in this parameterisation", "V"),
    ("warmup_frac", "*"): _r("warm-up as a fraction of training is scale-free", "D"),
    ("one_minus_beta", "*"): _r(_T5 + ": Adam betas transfer unchanged", "V"),
    ("iterations", "*"): _r("steps = tokens / batch at the target", "V", batch=-1, duration=1),
}


@dataclass(frozen=True)
class _Recipe:
    """Which parts make up a parameterisation."""

    mup: bool
    alpha: float | None
    sde: bool
    moe: bool


_RECIPES: dict[str, _Recipe] = {
    "sp": _Recipe(mup=False, alpha=None, sde=False, moe=False),
    "mup": _Recipe(mup=True, alpha=None, sde=False, moe=False),
    "depth_mup": _Recipe(mup=True, alpha=0.5, sde=False, moe=False),
    "completep": _Recipe(mup=True, alpha=1.0, sde=False, moe=False),
    "completedp": _Recipe(mup=True, alpha=1.0, sde=True, moe=False),
    "moe_mup": _Recipe(mup=True, alpha=1.0, sde=False, moe=True),
}


def build_table(
    parameterization: str, readout: str = "multiplier", optimizer: str = "adamw"
) -> RuleTable:
    """Assemble the rule table of one parameterisation, readout flavour and optimiser.

    Args:
        parameterization: one of ``PARAMETERIZATIONS``.
        readout: ``multiplier`` (TP5 Table 8) or ``init`` (Table 3 / Complete(d)P).
        optimizer: ``adamw``; ``muon`` (hidden matrices on Muon, the rest AdamW);
            ``lion``/``sophia`` (Adam-like: AdamW rules, downgraded to evidence ``D``).

    Returns:
        (hyperparameter key, role) → rule, with role ``*`` for global hyperparameters.

    Raises:
        KeyError: unknown parameterisation, flavour or optimiser (callers validate first).
    """
    recipe = _RECIPES[parameterization]
    if readout not in READOUTS or optimizer not in OPTIMIZERS:
        raise KeyError(f"{readout!r}/{optimizer!r}")
    table = dict(_MUP_T8 if readout == "multiplier" else _MUP_T3) if recipe.mup else dict(_SP_WIDTH)
    table.update(_GLOBAL_BASE)
    if recipe.moe:
        table.update(_MOE_OVERRIDES)
    if optimizer == "muon" and recipe.mup:
        for (hp, role), rule in _MUON_OVERRIDES.items():
            for k in [k for k in table if k[0] == hp and _role_root(k[1]) == role]:
                table[k] = rule
            table[(hp, role)] = rule
    if parameterization == "completedp":
        for key, rule in _COMPLETEDP_WIDTH.items():
            table[key] = rule
    if recipe.alpha is not None:
        for key, rule in _depth_part(recipe.alpha).items():
            if key == ("residual_mult", "*"):
                table[key] = rule
                continue
            for k in [k for k in table if k[0] == key[0] and _role_root(k[1]) == key[1]]:
                table[k] = table[k].then(rule)
        if optimizer == "muon":
            for k in [k for k in table if k[0] == "lr" and _role_root(k[1]) == "hidden"]:
                table[k] = table[k].then(_MUON_DEPTH)
    if recipe.sde:
        for key, rule in _sde_part().items():
            matches = [k for k in table if k[0] == key[0] and _role_root(k[1]) == key[1]]
            for k in matches or [key]:
                table[k] = table[k].then(rule) if k in table else rule
    if optimizer in ("lion", "sophia"):
        note = f"{optimizer} treated as Adam-like (TP5 App. B, mup/optim.py)"
        for k, rule in list(table.items()):
            if k[0] in ("lr", "wd", "eps"):
                table[k] = replace(
                    rule, sources=(*rule.sources, note), confidence=weakest(rule.confidence, "D")
                )
    return table


def _role_root(role: str) -> str:
    return role.split(".", 1)[0]
