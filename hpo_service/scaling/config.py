"""Validation of a study's ``scale`` field (``domain.scale.ScaleConfig``).

Validated once, when the study is created, so that extrapolation and the proxy models can
trust it. Errors carry a precise location under ``("body", "scale", ...)`` so the API
answers with a 422 that points at the offending field.

``sophia`` is in the vocabulary (its Adam-like scaling rules are in ``rules.py``, and
studies stored before it was refused must still load) but no built-in proxy can train
with it, so a new study naming it is refused with a 422 ``unsupported-feature`` instead
of every trial failing later in the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hpo_service.domain.scale import ScaleConfig
from hpo_service.domain.shape import ModelShape, parse_shape
from hpo_service.errors import FieldError, InvalidInputError, UnsupportedFeatureError
from hpo_service.scaling.naming import parse_name
from hpo_service.scaling.rules import DEPTH_ALPHA, OPTIMIZERS, PARAMETERIZATIONS, READOUTS

# ``ScaleConfig`` is the domain's (a study carries it); it is named here too because this
# is where a scale configuration is validated, and where the proxies look for it.
__all__ = ["ScaleConfig", "check_param_names", "validate_scale"]

_FIELDS = ("parameterization", "readout", "optimizer", "proxy", "base")
# Optimisers with scaling rules but no implementation to train a proxy with.
_NOT_TRAINABLE = frozenset({"sophia"})


def _choice(
    data: Mapping[str, Any],
    key: str,
    allowed: Sequence[str],
    default: str | None,
    loc: tuple[str | int, ...],
    errors: list[FieldError],
) -> str:
    value = data.get(key, default)
    if value is None:
        errors.append(FieldError((*loc, key), f"{key} is required; one of {', '.join(allowed)}"))
        return ""
    if value not in allowed:
        errors.append(
            FieldError((*loc, key), f"unknown {key} {value!r}; one of {', '.join(allowed)}")
        )
    return str(value)


def validate_scale(
    data: Mapping[str, Any] | ScaleConfig | None,
    *,
    loc: Sequence[str | int] = ("body", "scale"),
    param_names: Iterable[str] | None = None,
    names_loc: Sequence[str | int] = ("body", "space", "parameters"),
    new_study: bool = False,
) -> ScaleConfig | None:
    """Validate a study's ``scale`` object.

    Args:
        data: the raw JSON object (or an already built config, or None for no scaling).
        loc: where ``scale`` sits in the request.
        param_names: the study's parameter names; when given they are checked too
            (unknown roles, ``lr_depth`` indices beyond the proxy depth).
        names_loc: where the parameter names sit in the request.
        new_study: the config is for a study being created, so it must also be one
            this build can train (no ``sophia``); stored configs are read without it.

    Returns:
        The config, or None when ``data`` is None.

    Raises:
        InvalidInputError: every problem found, each with its own location.
        UnsupportedFeatureError: with ``new_study``, an optimiser no proxy can train.
    """
    if data is None:
        return None
    config = data if isinstance(data, ScaleConfig) else _build(data, tuple(loc))
    if param_names is not None:
        check_param_names(param_names, config, loc=tuple(names_loc))
    if new_study and config.optimizer in _NOT_TRAINABLE:
        raise UnsupportedFeatureError.at(
            (*loc, "optimizer"),
            f"optimizer {config.optimizer!r} is not supported yet: this build has no "
            "implementation to train with it; use one of "
            + ", ".join(o for o in OPTIMIZERS if o not in _NOT_TRAINABLE),
        )
    return config


def _build(data: Mapping[str, Any], loc: tuple[str | int, ...]) -> ScaleConfig:
    if not isinstance(data, Mapping):
        raise InvalidInputError.at(loc, "scale must be an object")
    errors: list[FieldError] = [
        FieldError((*loc, k), f"unknown field {k!r}; allowed: {', '.join(_FIELDS)}")
        for k in data
        if k not in _FIELDS
    ]
    param = _choice(data, "parameterization", PARAMETERIZATIONS, None, loc, errors)
    readout = _choice(data, "readout", READOUTS, "multiplier", loc, errors)
    optimizer = _choice(data, "optimizer", OPTIMIZERS, "adamw", loc, errors)
    shapes: dict[str, ModelShape] = {}
    for key in ("proxy", "base"):
        if key not in data and key == "proxy":
            errors.append(FieldError((*loc, key), "proxy shape is required (at least width)"))
            continue
        if key not in data or data[key] is None:
            continue
        try:
            shapes[key] = parse_shape(data[key], (*loc, key))
        except InvalidInputError as exc:
            errors.extend(exc.errors)
    if not errors:
        errors.extend(_check_consistency(param, shapes, loc))
    if errors:
        raise InvalidInputError("invalid scale configuration", errors)
    return ScaleConfig.model_validate(
        {"parameterization": param, "readout": readout, "optimizer": optimizer, **shapes}
    )


def _check_consistency(
    param: str, shapes: Mapping[str, ModelShape], loc: tuple[str | int, ...]
) -> list[FieldError]:
    errors: list[FieldError] = []
    for key, shape in shapes.items():
        if param in DEPTH_ALPHA and shape.depth is None:
            errors.append(
                FieldError((*loc, key, "depth"), f"{param} scales with depth: give the depth")
            )
        if param == "moe_mup" and shape.experts is None:
            errors.append(FieldError((*loc, key, "experts"), "moe_mup needs the expert count"))
        if param != "moe_mup" and shape.experts is not None:
            errors.append(
                FieldError((*loc, key, "experts"), "experts only apply to moe_mup studies")
            )
    proxy, base = shapes.get("proxy"), shapes.get("base")
    if proxy is not None and base is not None:
        for axis in proxy.axes():
            if getattr(base, axis) is None:
                errors.append(
                    FieldError((*loc, "base", axis), f"base shape lacks {axis}, which proxy has")
                )
    return errors


def check_param_names(
    names: Iterable[str], config: ScaleConfig, *, loc: tuple[str | int, ...]
) -> None:
    """Check that every per-module name addresses a known role and a block that exists.

    Raises:
        InvalidInputError: one entry per bad name, located at ``(*loc, name)``.
    """
    errors: list[FieldError] = []
    depth = config.base_shape.depth
    for name in names:
        try:
            parsed = parse_name(name)
        except ValueError as exc:
            errors.append(FieldError((*loc, name), str(exc)))
            continue
        if parsed.kind != "depth" or parsed.index is None:
            continue
        if depth is None:
            errors.append(FieldError((*loc, name), "lr_depth.<i> needs a proxy depth"))
        elif parsed.index >= depth:
            errors.append(
                FieldError((*loc, name), f"block index {parsed.index} ≥ proxy depth {depth}")
            )
    if errors:
        raise InvalidInputError("parameter names do not fit the scale configuration", errors)
