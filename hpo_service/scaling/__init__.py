"""Per-module hyperparameter scaling: rule tables, extrapolation, ladder diagnostics.

The pure parts (no torch) are exported here; the torch helper lives in
``hpo_service.scaling.torch_setup`` and the Muon optimiser in ``hpo_service.scaling.muon``
so that importing the rules never imports torch.
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
