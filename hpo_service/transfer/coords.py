"""Region coordinates: parameter assignments ⇄ the numeric coordinates a region constrains.

``transfer`` sits beside ``engine`` in the layering and may not import it, yet the
encoded cube must be *the* engine's cube (one seam, exactly invertible). So the encoder is
passed in: anything with ``SpaceEncoder``'s ``encode``/``decode``/``columns`` shape fits
the ``CubeEncoder`` protocol, and services hand over the engine's class.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from hpo_service.domain import (
    CategoricalParameter,
    IntParameter,
    OrdinalParameter,
    Params,
    SearchSpace,
)
from hpo_service.domain.region import Box, Ellipsoid

__all__ = [
    "CubeEncoder",
    "EncoderFactory",
    "any_assignment",
    "numeric_names",
    "region_coords",
    "unconditional",
    "with_coords",
]

FloatArray = npt.NDArray[np.float64]


class _ColumnLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def stop(self) -> int: ...


class CubeEncoder(Protocol):
    """The part of the engine's ``SpaceEncoder`` that regions rely on."""

    @property
    def dim(self) -> int:
        """Width of an encoded vector."""
        ...

    @property
    def columns(self) -> Sequence[_ColumnLike]:
        """Where each parameter lives in the vector."""
        ...

    def encode(self, params: Params) -> FloatArray:
        """One assignment as a ``dim``-vector in the unit cube."""
        ...

    def decode(self, x: FloatArray) -> Params:
        """A ``dim``-vector back to a valid assignment."""
        ...


EncoderFactory = Callable[[SearchSpace], CubeEncoder]


def numeric_names(space: SearchSpace) -> list[str]:
    """Names of the float/int/ordinal parameters: the coordinates of a region."""
    return [p.name for p in space.parameters if not isinstance(p, CategoricalParameter)]


def unconditional(space: SearchSpace) -> SearchSpace:
    """The same parameters with every condition removed (each decodes on its own)."""
    return SearchSpace(
        parameters=[p.model_copy(update={"conditions": None}) for p in space.parameters]
    )


def region_coords(
    encoder: CubeEncoder, space: SearchSpace, params: Params, names: Sequence[str]
) -> FloatArray:
    """Coordinates ``names`` of one assignment; NaN where the parameter is absent.

    Returns:
        a ``len(names)`` vector of encoded values.
    """
    x = encoder.encode(params)
    column = {c.name: c.start for c in encoder.columns}
    out = np.full(len(names), np.nan)
    for i, name in enumerate(names):
        if name in params and space.is_active(name, params):
            out[i] = x[column[name]]
    return out


def with_coords(
    encoder: CubeEncoder, params: Params, names: Sequence[str], z: FloatArray
) -> Params:
    """``params`` moved to coordinates ``z`` (one per name), decoded to a valid assignment.

    Parameters ``params`` lacks (inactive) and NaN coordinates keep their value.
    """
    x = encoder.encode(params)
    column = {c.name: c.start for c in encoder.columns}
    for name, v in zip(names, z, strict=True):
        if name in params and math.isfinite(float(v)):
            x[column[name]] = v
    return encoder.decode(x)


def fill_inactive(z: FloatArray, region: Box | Ellipsoid) -> FloatArray:
    """Replace NaN coordinates (``n x dim``) with the middle of the region's bounds.

    An inactive parameter is unconstrained by the region, so a point should not be judged
    outside because of it.
    """
    z = np.atleast_2d(np.array(z, dtype=np.float64))
    mid = (np.asarray(region.lower) + np.asarray(region.upper)) / 2
    bad = ~np.isfinite(z)
    z[bad] = np.broadcast_to(mid, z.shape)[bad]
    return z


def grid_step(space: SearchSpace, name: str, encoder: CubeEncoder) -> float:
    """Encoded width of one grid step of an int or ordinal parameter (0 for floats)."""
    p = space.get(name)
    if isinstance(p, IntParameter):
        column = {c.name: c.start for c in encoder.columns}[name]
        a = encoder.encode(_with(space, name, p.low))[column]
        b = encoder.encode(_with(space, name, min(p.high, p.low + 1)))[column]
        return float(abs(b - a)) if p.high > p.low else 1.0
    if isinstance(p, OrdinalParameter):
        if len(p.values) < 2:
            return 1.0
        column = {c.name: c.start for c in encoder.columns}[name]
        pos = [encoder.encode(_with(space, name, v))[column] for v in p.values]
        return float(max(b - a for a, b in itertools.pairwise(pos)))
    return 0.0


def any_assignment(space: SearchSpace) -> Params:
    """Some valid assignment of ``space``: first choices, first values, lower bounds.

    Used where only the encoding of *some* point matters (a column's position, a region's
    fill), so which valid point it is does not.
    """
    out: Params = {}
    for p in space.parameters:
        if isinstance(p, CategoricalParameter):
            out[p.name] = p.choices[0]
        elif isinstance(p, OrdinalParameter):
            out[p.name] = p.values[0]
        else:
            out[p.name] = p.low
    return out


def _with(space: SearchSpace, name: str, value: float | int) -> Params:
    """``any_assignment`` of ``space`` with ``name`` set to ``value``."""
    return {**any_assignment(space), name: value}


def is_finite(value: object) -> bool:
    """Whether ``value`` is a real, finite number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
