"""The one seam between parameter assignments and points of the unit cube.

Every numeric designer works in ``[0, 1]^d``; this module maps a search space onto that
cube and back, exactly:

- ``float``: affine on the linear or log scale.
- ``int``: like float on ``[low − ½, high + ½]`` (log: on the log of those bounds), decoded
  by rounding, so each integer owns an interval of equal width (equal log-width) and a
  uniform sample of the cube is a uniform sample of the integers (on their scale).
- ``ordinal``: positioned by value on its scale; decoded to the nearest grid value.
- ``categorical``: one-hot, one column per choice; decoded by argmax.
- An inactive conditional parameter encodes as the centre (0.5, or all zeros for one-hot)
  and is dropped on decoding, so conditional spaces round-trip too.

``decode(encode(p)) == p`` for every valid assignment ``p``; property tests check it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hpo_service.domain import (
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    OrdinalParameter,
    Params,
    SearchSpace,
)

__all__ = ["Column", "SpaceEncoder"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Column:
    """Where one parameter lives in the encoded vector: columns ``[start, stop)``."""

    name: str
    start: int
    stop: int


class SpaceEncoder:
    """Maps assignments of ``space`` to vectors in the unit cube and back."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        columns: list[Column] = []
        start = 0
        for p in space.parameters:
            width = len(p.choices) if isinstance(p, CategoricalParameter) else 1
            columns.append(Column(p.name, start, start + width))
            start += width
        self.columns = columns
        self.dim = start
        self._column = {c.name: c for c in columns}

    @property
    def categorical_columns(self) -> list[int]:
        """Indices of the one-hot columns (for kernels that treat them natively)."""
        out: list[int] = []
        for p, c in zip(self.space.parameters, self.columns, strict=True):
            if isinstance(p, CategoricalParameter):
                out.extend(range(c.start, c.stop))
        return out

    def encode(self, params: Params) -> FloatArray:
        """Encode one valid assignment as a ``d``-vector in the unit cube."""
        x = np.zeros(self.dim, dtype=np.float64)
        for p, c in zip(self.space.parameters, self.columns, strict=True):
            if p.name not in params:
                x[c.start : c.stop] = 0.0 if isinstance(p, CategoricalParameter) else 0.5
                continue
            value = params[p.name]
            if isinstance(p, CategoricalParameter):
                x[c.start + p.choices.index(str(value))] = 1.0
            else:
                x[c.start] = _to_unit(p, float(value))
        return x

    def encode_many(self, assignments: list[Params]) -> FloatArray:
        """Encode ``n`` assignments as an ``n x d`` array."""
        if not assignments:
            return np.zeros((0, self.dim), dtype=np.float64)
        names = self.space.names
        if any(p.conditions is not None for p in self.space.parameters) or not all(
            len(a) == len(names) for a in assignments
        ):
            return np.stack([self.encode(a) for a in assignments])
        # Unconditional spaces: one vectorised pass per column (histories reach 10^4 rows).
        out = np.zeros((len(assignments), self.dim), dtype=np.float64)
        for p, c in zip(self.space.parameters, self.columns, strict=True):
            if isinstance(p, CategoricalParameter):
                index = {choice: i for i, choice in enumerate(p.choices)}
                hot = np.array([index[str(a[p.name])] for a in assignments])
                out[np.arange(len(assignments)), c.start + hot] = 1.0
                continue
            lo, hi = _interval(p)
            v = np.array([float(a[p.name]) for a in assignments])
            t = np.log(v) if p.scale == "log" else v
            out[:, c.start] = 0.5 if hi == lo else np.clip((t - lo) / (hi - lo), 0.0, 1.0)
        return out

    def decode(self, x: FloatArray) -> Params:
        """Decode a ``d``-vector (clipped to the cube) into a valid assignment."""
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        out: Params = {}
        for p in self.space.parameters:
            if not self.space.is_active(p.name, out):
                continue
            c = self._column[p.name]
            if isinstance(p, CategoricalParameter):
                out[p.name] = p.choices[int(np.argmax(x[c.start : c.stop]))]
            else:
                out[p.name] = _from_unit(p, float(x[c.start]))
        return out

    def decode_many(self, xs: FloatArray) -> list[Params]:
        """Decode an ``n x d`` array into ``n`` assignments."""
        return [self.decode(row) for row in np.atleast_2d(xs)]

    def project(self, xs: FloatArray) -> FloatArray:
        """Snap ``n x d`` cube points onto the encodings of valid assignments.

        An optimiser moves freely in the cube; projecting rounds integers and ordinals to
        their grid, turns categorical columns into an exact one-hot vertex and centres
        inactive conditional parameters, so the model scores exactly what would be run.
        """
        xs = np.clip(np.atleast_2d(np.asarray(xs, dtype=np.float64)), 0.0, 1.0)
        if any(p.conditions is not None for p in self.space.parameters):
            return self.encode_many(self.decode_many(xs))
        out = xs.copy()
        for p, c in zip(self.space.parameters, self.columns, strict=True):
            if isinstance(p, CategoricalParameter):
                block = np.zeros((len(xs), c.stop - c.start))
                block[np.arange(len(xs)), np.argmax(xs[:, c.start : c.stop], axis=1)] = 1.0
                out[:, c.start : c.stop] = block
            elif isinstance(p, IntParameter):
                lo, hi = _interval(p)
                raw = lo + xs[:, c.start] * (hi - lo)
                ints = np.clip(np.rint(np.exp(raw) if p.scale == "log" else raw), p.low, p.high)
                t = np.log(ints) if p.scale == "log" else ints
                out[:, c.start] = np.clip((t - lo) / (hi - lo), 0.0, 1.0)
            elif isinstance(p, OrdinalParameter):
                grid = np.array([_to_unit(p, float(v)) for v in p.values])
                idx = np.abs(xs[:, c.start, None] - grid[None, :]).argmin(axis=1)
                out[:, c.start] = grid[idx]
        return out

    def grid(self, name: str, max_size: int = 4096) -> FloatArray | None:
        """Encoded positions of every value of an integer or ordinal parameter.

        Returns None for floats, categoricals and grids larger than ``max_size`` (those
        are searched as continuous and rounded), so callers can enumerate small grids.
        """
        p = self.space.get(name)
        if isinstance(p, OrdinalParameter):
            values: list[float] = [float(v) for v in p.values]
        elif isinstance(p, IntParameter) and p.high - p.low < max_size:
            values = [float(v) for v in range(p.low, p.high + 1)]
        else:
            return None
        if len(values) > max_size:
            return None
        return np.array([_to_unit(p, v) for v in values], dtype=np.float64)


def _transform(scale: str, v: float) -> float:
    return math.log(v) if scale == "log" else v


def _inverse(scale: str, t: float) -> float:
    return math.exp(t) if scale == "log" else t


def _interval(p: FloatParameter | IntParameter | OrdinalParameter) -> tuple[float, float]:
    """The transformed interval that maps onto ``[0, 1]``."""
    if isinstance(p, OrdinalParameter):
        return _transform(p.scale, p.values[0]), _transform(p.scale, p.values[-1])
    if isinstance(p, IntParameter):
        # log ints have low >= 1, so low - 1/2 > 0 and the log stays defined.
        return _transform(p.scale, p.low - 0.5), _transform(p.scale, p.high + 0.5)
    return _transform(p.scale, p.low), _transform(p.scale, p.high)


def _to_unit(p: FloatParameter | IntParameter | OrdinalParameter, value: float) -> float:
    lo, hi = _interval(p)
    if hi == lo:
        return 0.5
    return min(1.0, max(0.0, (_transform(p.scale, value) - lo) / (hi - lo)))


def _from_unit(p: FloatParameter | IntParameter | OrdinalParameter, u: float) -> float | int:
    lo, hi = _interval(p)
    raw = _inverse(p.scale, lo + u * (hi - lo))
    if isinstance(p, FloatParameter):
        return min(p.high, max(p.low, raw))
    if isinstance(p, IntParameter):
        return int(min(p.high, max(p.low, round(raw))))
    target = _transform(p.scale, raw)
    return min(p.values, key=lambda v: abs(_transform(p.scale, v) - target))
