"""Per-module hyperparameter scaling: rule tables, extrapolation, ladder diagnostics.

Everything here is pure (no torch); the torch side (``torch_setup``, the Muon optimiser)
lives with the built-in proxies in ``hpo_service.proxies``, so the service never imports
torch to apply a rule.
"""

from hpo_service.scaling.config import ScaleConfig, check_param_names, validate_scale
from hpo_service.scaling.extrapolate import (
    ExtrapolationResult,
    Multipliers,
    RuleEntry,
    extrapolate,
    resolve_target,
    shape_multipliers,
)
from hpo_service.scaling.rules import PARAMETERIZATIONS, build_table

__all__ = [
    "PARAMETERIZATIONS",
    "ExtrapolationResult",
    "Multipliers",
    "RuleEntry",
    "ScaleConfig",
    "build_table",
    "check_param_names",
    "extrapolate",
    "resolve_target",
    "shape_multipliers",
    "validate_scale",
]
