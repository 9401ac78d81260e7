"""Optuna distributions ↔ the service's search space, and Optuna's objectives as metrics.

The service's space is narrower than Optuna's in three ways, each bridged here so that a
value makes the round trip exactly (the sampler checks that a finished trial used the
values it was handed, so an inexact round trip would look like a different point):

* names: the service takes ``[A-Za-z0-9_.-]{1,128}``; other Optuna names get a readable,
  hashed stand-in (``"lr/head"`` → ``"lr_head-3f2a9c1e"``);
* categorical choices are strings on the service: a non-string choice travels as its
  ``repr`` (``1`` → ``"1"``, ``None`` → ``"None"``), or, if two choices would share a
  label (``1`` and ``"1"``), every label gets its index in front;
* ``step`` grids: up to ``MAX_GRID`` points become an ``ordinal`` (the service suggests
  exactly a grid point); a finer grid becomes a continuous range whose suggestions are
  rounded to the grid, which the designer sees as mild noise.

A distribution with a single value becomes a one-value ordinal or categorical.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.study import StudyDirection

__all__ = [
    "MAX_GRID",
    "ParamCodec",
    "SpaceCodec",
    "objectives_spec",
    "same_value",
    "service_name",
]

MAX_GRID = 1000
"""The most points a ``step`` grid may have to become an ``ordinal`` parameter."""

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.\-]")

JSON = dict[str, Any]


def service_name(name: str) -> str:
    """``name`` if the service accepts it, else a readable stand-in made unique by a hash."""
    if _NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{_NOT_NAME.sub('_', name)[:119] or '_'}-{digest}"


def _labels(choices: Sequence[CategoricalChoiceType]) -> tuple[str, ...]:
    labels = tuple(c if isinstance(c, str) else repr(c) for c in choices)
    if len(set(labels)) == len(labels):
        return labels
    return tuple(f"{i}:{label}" for i, label in enumerate(labels))


def same_value(a: Any, b: Any) -> bool:
    """Equal and of one type: ``True == 1`` in Python, but they are different choices."""
    return type(a) is type(b) and bool(a == b)


@dataclass(frozen=True)
class ParamCodec:
    """One Optuna parameter and its service counterpart.

    Attributes:
        name: the Optuna name.
        key: the service name.
        distribution: the Optuna distribution.
        spec: the service parameter (API.md, Search space).
        labels: for a categorical, the service's string for each choice, in order.
        grid: for a ``step`` grid served as a continuous range, the step to round to.
    """

    name: str
    key: str
    distribution: BaseDistribution
    spec: JSON
    labels: tuple[str, ...] = ()
    grid: float | int | None = None

    @classmethod
    def of(cls, name: str, dist: BaseDistribution) -> ParamCodec:
        """Map one distribution.

        Raises:
            TypeError: a distribution type Optuna no longer creates (the deprecated ones
                all subclass the three handled here).
        """
        key = service_name(name)
        if isinstance(dist, CategoricalDistribution):
            labels = _labels(dist.choices)
            spec: JSON = {"name": key, "type": "categorical", "choices": list(labels)}
            return cls(name, key, dist, spec, labels=labels)
        if isinstance(dist, FloatDistribution | IntDistribution):
            return cls._numeric(name, key, dist)
        raise TypeError(f"parameter {name!r}: unsupported distribution {dist!r}")

    @classmethod
    def _numeric(cls, name: str, key: str, dist: FloatDistribution | IntDistribution) -> ParamCodec:
        kind = "int" if isinstance(dist, IntDistribution) else "float"
        scale = "log" if dist.log else "linear"
        step = dist.step if kind == "float" or dist.step != 1 else None
        if dist.single():
            return cls(name, key, dist, {"name": key, "type": "ordinal", "values": [dist.low]})
        spec: JSON
        if step is None:
            spec = {"name": key, "type": kind, "low": dist.low, "high": dist.high, "scale": scale}
            return cls(name, key, dist, spec)
        points = round((dist.high - dist.low) / step) + 1
        if points <= MAX_GRID:
            values = sorted({min(dist.high, dist.low + i * step) for i in range(points)})
            spec = {"name": key, "type": "ordinal", "values": values}
            return cls(name, key, dist, spec)
        spec = {"name": key, "type": kind, "low": dist.low, "high": dist.high}
        return cls(name, key, dist, spec, grid=step)

    def decode(self, value: Any) -> Any:
        """The Optuna value for a service value, of the type Optuna's own samplers return."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[self.labels.index(str(value))]
        assert isinstance(dist, FloatDistribution | IntDistribution)
        number = float(value)
        if self.grid is not None:
            number = dist.low + round((number - dist.low) / self.grid) * self.grid
        number = min(max(number, dist.low), dist.high)
        if isinstance(dist, IntDistribution):
            return round(number)
        return float(number)

    def encode(self, value: Any) -> Any | None:
        """The service value for an Optuna value; None when it lies outside the distribution."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            for choice, label in zip(dist.choices, self.labels, strict=True):
                if same_value(choice, value):
                    return label
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or not dist._contains(float(value)):
            return None
        if self.spec["type"] == "ordinal":
            values: list[float] = self.spec["values"]
            return min(values, key=lambda v: abs(v - value))
        return int(value) if isinstance(dist, IntDistribution) else float(value)


class SpaceCodec:
    """A whole Optuna search space as a service space, with its values both ways.

    Attributes:
        params: one codec per Optuna parameter, in name order.
        digest: a short hash of the distributions; equal spaces give equal digests, so a
            study's system attributes can remember a service study per space.
    """

    def __init__(self, distributions: Mapping[str, BaseDistribution]) -> None:
        self.params = [ParamCodec.of(n, distributions[n]) for n in sorted(distributions)]
        keys = [p.key for p in self.params]
        if len(set(keys)) != len(keys):
            raise ValueError(f"parameter names collide on the service: {sorted(distributions)}")
        self._by_key = {p.key: p for p in self.params}
        blob = json.dumps(
            [[p.name, json.loads(distribution_to_json(p.distribution))] for p in self.params],
            sort_keys=True,
        )
        self.digest = hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.params)

    def space(self) -> JSON:
        """The service's ``space`` object."""
        return {"parameters": [p.spec for p in self.params]}

    def distributions_json(self) -> dict[str, Any]:
        """Optuna's own JSON of each distribution, kept in the service study's metadata."""
        return {p.name: json.loads(distribution_to_json(p.distribution)) for p in self.params}

    def decode(self, service_params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna values for a service trial's ``params``."""
        return {
            self._by_key[k].name: self._by_key[k].decode(v)
            for k, v in service_params.items()
            if k in self._by_key
        }

    def encode(self, optuna_params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Service params for an Optuna trial's params; None unless every one fits."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name not in optuna_params:
                return None
            value = p.encode(optuna_params[p.name])
            if value is None:
                return None
            out[p.key] = value
        return out


def objectives_spec(
    directions: Sequence[StudyDirection], metric_names: Sequence[str] | None
) -> list[JSON]:
    """The service's objectives for an Optuna study: one metric per direction.

    Optuna's ``set_metric_names`` names are used where given (made service-safe), else
    ``value`` for a single objective and ``value_0``, ``value_1``, ... for several.
    """
    if metric_names and len(metric_names) == len(directions):
        names = [service_name(n) for n in metric_names]
    elif len(directions) == 1:
        names = ["value"]
    else:
        names = [f"value_{i}" for i in range(len(directions))]
    if len(set(names)) != len(names):
        names = [f"value_{i}" for i in range(len(directions))]
    return [
        {"metric": n, "goal": "maximize" if d == StudyDirection.MAXIMIZE else "minimize"}
        for n, d in zip(names, directions, strict=True)
    ]
