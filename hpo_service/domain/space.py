"""Search spaces: the parameters a study tunes, their ranges and their conditions.

A space is plain data (pydantic models) so the same object is the API schema, the value
stored in the database and the input of every designer. Validation lives here so that a
bad space or a parameter value outside it is rejected with a message that says exactly
which field is wrong, before anything is stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpo_service.errors import FieldError, InvalidInputError

__all__ = [
    "AnyParameter",
    "CategoricalParameter",
    "Condition",
    "FloatParameter",
    "IntParameter",
    "OrdinalParameter",
    "ParamValue",
    "Parameter",
    "Params",
    "Scale",
    "SearchSpace",
]

NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
_NAME_RE = re.compile(NAME_PATTERN)

Scale = Literal["linear", "log"]
ParamValue = float | int | str
Params = dict[str, ParamValue]


class Condition(BaseModel):
    """Makes a parameter active only when its parent takes one of ``values``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parent: str
    values: list[ParamValue] = Field(min_length=1)


class _ParameterBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    conditions: Condition | None = None


class FloatParameter(_ParameterBase):
    """A real number in ``[low, high]``, searched on a linear or log scale."""

    type: Literal["float"] = "float"
    low: float
    high: float
    scale: Scale = "linear"

    @model_validator(mode="after")
    def _check_range(self) -> FloatParameter:
        _check_bounds(self.low, self.high, self.scale)
        return self


class IntParameter(_ParameterBase):
    """An integer in ``[low, high]``, searched on a linear or log scale."""

    type: Literal["int"] = "int"
    low: int
    high: int
    scale: Scale = "linear"

    @model_validator(mode="after")
    def _check_range(self) -> IntParameter:
        _check_bounds(self.low, self.high, self.scale)
        return self


class OrdinalParameter(_ParameterBase):
    """One of an ordered grid of numbers; suggestions return exactly one of them."""

    type: Literal["ordinal"] = "ordinal"
    values: list[float | int] = Field(min_length=1)
    scale: Scale = "linear"

    @model_validator(mode="after")
    def _check_values(self) -> OrdinalParameter:
        if any(not math.isfinite(v) for v in self.values):
            raise ValueError("ordinal values must be finite numbers")
        if any(b <= a for a, b in zip(self.values, self.values[1:], strict=False)):
            raise ValueError("ordinal values must be strictly increasing")
        if self.scale == "log" and self.values[0] <= 0:
            raise ValueError("log scale requires every ordinal value > 0")
        return self


class CategoricalParameter(_ParameterBase):
    """One of an unordered set of string choices."""

    type: Literal["categorical"] = "categorical"
    choices: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_choices(self) -> CategoricalParameter:
        if len(set(self.choices)) != len(self.choices):
            raise ValueError("categorical choices must be unique")
        return self


AnyParameter = FloatParameter | IntParameter | OrdinalParameter | CategoricalParameter
Parameter = Annotated[AnyParameter, Field(discriminator="type")]


def _check_bounds(low: float, high: float, scale: str) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite")
    if low >= high:
        raise ValueError(f"low ({low}) must be smaller than high ({high})")
    if scale == "log" and low <= 0:
        raise ValueError(f"log scale requires low > 0, got {low}")


class SearchSpace(BaseModel):
    """An ordered list of uniquely named parameters, some conditional on others.

    Conditions form a forest: each conditional parameter names a parent declared in the
    same space whose value set it depends on; cycles are rejected.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    parameters: list[Parameter] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_structure(self) -> SearchSpace:
        names = [p.name for p in self.parameters]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"parameter name {name!r} is used twice")
            seen.add(name)
        by_name = {p.name: p for p in self.parameters}
        for p in self.parameters:
            if p.conditions is None:
                continue
            parent = by_name.get(p.conditions.parent)
            if parent is None:
                raise ValueError(
                    f"parameter {p.name!r} depends on unknown parent {p.conditions.parent!r}"
                )
            if parent.name == p.name:
                raise ValueError(f"parameter {p.name!r} cannot depend on itself")
            for value in p.conditions.values:
                if _value_error(parent, value) is not None:
                    raise ValueError(
                        f"condition of {p.name!r}: {value!r} is not a value of {parent.name!r}"
                    )
        for p in self.parameters:
            chain: list[str] = [p.name]
            current = p
            while current.conditions is not None:
                current = by_name[current.conditions.parent]
                if current.name in chain:
                    raise ValueError(
                        "conditions form a cycle: " + " -> ".join([*chain, current.name])
                    )
                chain.append(current.name)
        return self

    @property
    def names(self) -> list[str]:
        """Parameter names in declaration order."""
        return [p.name for p in self.parameters]

    def get(
        self, name: str
    ) -> FloatParameter | IntParameter | OrdinalParameter | CategoricalParameter:
        """Return the parameter called ``name``; KeyError if there is none."""
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def is_active(self, name: str, params: Mapping[str, Any]) -> bool:
        """Whether ``name`` is active given the values of its ancestors in ``params``."""
        param = self.get(name)
        if param.conditions is None:
            return True
        parent = param.conditions.parent
        if not self.is_active(parent, params) or parent not in params:
            return False
        return _same_value(params[parent], param.conditions.values)

    def validate_params(
        self, params: Mapping[str, Any], *, loc: tuple[str | int, ...] = ()
    ) -> Params:
        """Check a full assignment against the space and return it normalised.

        Every active parameter must be present with a value in range; inactive and unknown
        names are errors, so a stored trial always matches its space exactly. ``int``
        values given as integral floats (``3.0``) are normalised to ``int``.

        Raises:
            InvalidInputError: listing every offending field under ``loc``.
        """
        errors: list[FieldError] = []
        out: Params = {}
        known = set(self.names)
        for name in params:
            if name not in known:
                errors.append(FieldError((*loc, name), f"unknown parameter {name!r}"))
        for p in self.parameters:
            active = self.is_active(p.name, params)
            if not active:
                if p.name in params:
                    errors.append(
                        FieldError(
                            (*loc, p.name), f"parameter {p.name!r} is inactive for these values"
                        )
                    )
                continue
            if p.name not in params:
                errors.append(FieldError((*loc, p.name), f"missing value for parameter {p.name!r}"))
                continue
            value = params[p.name]
            problem = _value_error(p, value)
            if problem is not None:
                errors.append(FieldError((*loc, p.name), problem))
                continue
            out[p.name] = _normalise(p, value)
        if errors:
            raise InvalidInputError("parameters do not match the study's search space", errors)
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value_error(p: AnyParameter, value: Any) -> str | None:
    """Say why ``value`` is not a legal value of ``p``; None when it is."""
    if isinstance(p, CategoricalParameter):
        if not isinstance(value, str) or value not in p.choices:
            return f"{value!r} is not one of {p.choices}"
        return None
    if not _is_number(value) or not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if isinstance(p, OrdinalParameter):
        if not any(
            math.isclose(value, v, rel_tol=1e-12, abs_tol=0.0) or value == v for v in p.values
        ):
            return f"{value!r} is not one of {p.values}"
        return None
    if isinstance(p, IntParameter) and float(value) != int(value):
        return f"{value!r} is not an integer"
    if not p.low <= value <= p.high:
        return f"{value!r} is outside [{p.low}, {p.high}]"
    return None


def _normalise(p: AnyParameter, value: Any) -> ParamValue:
    if isinstance(p, IntParameter):
        return int(value)
    if isinstance(p, FloatParameter):
        return float(value)
    if isinstance(p, OrdinalParameter):
        return min(p.values, key=lambda v: abs(v - value))
    return str(value)


def _same_value(value: Any, allowed: list[ParamValue]) -> bool:
    for a in allowed:
        if isinstance(a, str) or isinstance(value, str):
            if a == value:
                return True
        elif _is_number(value) and math.isclose(float(a), float(value), rel_tol=1e-12):
            return True
    return False
