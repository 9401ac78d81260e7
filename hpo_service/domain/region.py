"""Regions: compact parts of a search space learned from earlier studies (TRANSFER.md).

A region lives in the *encoded unit cube* of a space: every numeric parameter (float,
int, ordinal) is one coordinate in ``[0, 1]`` after its log scale and bounds are applied,
exactly as the engine's ``SpaceEncoder`` places it. Categorical parameters are not
coordinates; a region keeps a subset of their choices instead. Parameters a region does
not name are unconstrained, which is how conditional parameters and parameters unknown to
the source studies are handled.

Two shapes share one contract (``contains``, ``sample``, ``volume_fraction``, a JSON
form, ``expanded``):

- ``Box``: ``lower <= z <= upper`` per named coordinate.
- ``Ellipsoid``: the box of its bounding box *and* ``(z_a - c)ᵀ M (z_a - c) <= 1`` over
  its ``axes`` (a subset of the names); the box part carries the coordinates that cannot
  be part of the ellipsoid (conditional parameters).

Everything is numpy and pydantic so a region can be stored with a study, shown by the
API and explained without the engine.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = [
    "AnyRegion",
    "Box",
    "Ellipsoid",
    "Region",
    "ellipsoid_from",
    "region_from_json",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Monte-Carlo draws for the part of an ellipsoid that lies inside the cube; fixed seed so
# the reported fraction is the same on every call.
_VOLUME_DRAWS = 20_000
_VOLUME_SEED = 20190912
# Rounds of rejection sampling before points are pulled radially into the region.
_SAMPLE_ROUNDS = 8
_TOL = 1e-9


@runtime_checkable
class Region(Protocol):
    """What designers and services need from a learned region.

    Coordinates are passed as ``n x len(names)`` arrays in the order of ``names``.
    """

    kind: str
    names: list[str]
    lower: list[float]
    upper: list[float]
    categorical_subsets: dict[str, list[str]]
    categorical_choices: dict[str, list[str]]

    def contains(self, z: FloatArray) -> BoolArray:
        """Which of the ``n`` points (rows of ``z``) lie inside; a length-``n`` mask."""
        ...

    def sample(self, n: int, rng: np.random.Generator) -> FloatArray:
        """``n`` points drawn uniformly inside the region and the cube: ``n x len(names)``."""
        ...

    def volume_fraction(self) -> float:
        """Share of the space the region keeps (numeric volume times categorical share)."""
        ...

    def expanded(self, factor: float) -> Region:
        """The region grown about its centre by ``factor`` (>= 1), all choices allowed."""
        ...

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict that ``region_from_json`` reads back exactly."""
        ...


class _RegionBase(BaseModel):
    """Fields and laws common to every region shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    names: list[str]
    lower: list[float]
    upper: list[float]
    categorical_subsets: dict[str, list[str]] = Field(default_factory=dict)
    categorical_choices: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_common(self) -> _RegionBase:
        if len(set(self.names)) != len(self.names):
            raise ValueError("region coordinate names must be unique")
        if not len(self.lower) == len(self.upper) == len(self.names):
            raise ValueError("lower, upper and names must have the same length")
        for name, lo, hi in zip(self.names, self.lower, self.upper, strict=True):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"bounds of {name!r} must be finite")
            if not -_TOL <= lo <= hi <= 1.0 + _TOL:
                raise ValueError(f"bounds of {name!r} must satisfy 0 <= lower <= upper <= 1")
        for name, kept in self.categorical_subsets.items():
            allowed = self.categorical_choices.get(name)
            if allowed is None:
                raise ValueError(f"categorical subset {name!r} has no list of all choices")
            if not kept or any(c not in allowed for c in kept):
                raise ValueError(f"subset of {name!r} must be a non-empty subset of its choices")
        return self

    # -- shared pieces -----------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Number of numeric coordinates the region constrains."""
        return len(self.names)

    def _lo_hi(self) -> tuple[FloatArray, FloatArray]:
        return np.asarray(self.lower, dtype=np.float64), np.asarray(self.upper, dtype=np.float64)

    def _in_box(self, z: FloatArray) -> BoolArray:
        lo, hi = self._lo_hi()
        z = _as_points(z, self.dim)
        inside: BoolArray = np.all((z >= lo - _TOL) & (z <= hi + _TOL), axis=1)
        return inside

    def _categorical_fraction(self) -> float:
        frac = 1.0
        for name, kept in self.categorical_subsets.items():
            frac *= len(kept) / len(self.categorical_choices[name])
        return frac

    def allows(self, name: str, choice: str) -> bool:
        """Whether categorical ``name`` may take ``choice`` inside the region."""
        kept = self.categorical_subsets.get(name)
        return kept is None or choice in kept

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict that ``region_from_json`` reads back exactly."""
        return self.model_dump(mode="json")


class Box(_RegionBase):
    """An axis-aligned box in the encoded cube (Perrone et al. 2019's bounding box)."""

    kind: Literal["box"] = "box"

    def contains(self, z: FloatArray) -> BoolArray:
        """Which of the ``n`` points (rows of ``z``) lie inside; a length-``n`` mask."""
        return self._in_box(z)

    def sample(self, n: int, rng: np.random.Generator) -> FloatArray:
        """``n x dim`` points drawn uniformly inside the box."""
        lo, hi = self._lo_hi()
        return lo + rng.random((n, self.dim)) * (hi - lo)

    def volume_fraction(self) -> float:
        """Product of the side lengths times the share of categorical choices kept."""
        lo, hi = self._lo_hi()
        return float(np.prod(hi - lo)) * self._categorical_fraction()

    def expanded(self, factor: float) -> Box:
        """Half-widths multiplied by ``factor`` about the centre, clipped to the cube."""
        lo, hi = self._lo_hi()
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * max(1.0, factor)
        return self.model_copy(
            update={
                "lower": np.clip(mid - half, 0.0, 1.0).tolist(),
                "upper": np.clip(mid + half, 0.0, 1.0).tolist(),
                "categorical_subsets": {},
            }
        )


class Ellipsoid(_RegionBase):
    """An ellipsoid over ``axes`` intersected with the box ``lower``/``upper`` and the cube.

    ``center`` (``len(axes)``) and ``matrix`` (``len(axes) x len(axes)``, symmetric positive
    definite) define ``{z : (z - center)ᵀ matrix (z - center) <= 1}``; the semi-axes are
    ``1 / sqrt(eigenvalues)``. On ``axes`` the box is the ellipsoid's bounding box clipped
    to the cube; on the other names it is the region itself.
    """

    kind: Literal["ellipsoid"] = "ellipsoid"
    axes: list[str]
    center: list[float]
    matrix: list[list[float]]

    @model_validator(mode="after")
    def _check_ellipsoid(self) -> Ellipsoid:
        k = len(self.axes)
        if k == 0 or any(a not in self.names for a in self.axes):
            raise ValueError("ellipsoid axes must be a non-empty subset of names")
        if len(self.center) != k or len(self.matrix) != k or any(len(r) != k for r in self.matrix):
            raise ValueError("center must have len(axes) entries and matrix be len(axes) square")
        m = np.asarray(self.matrix, dtype=np.float64)
        if not np.all(np.isfinite(m)) or not np.allclose(m, m.T, atol=1e-8 * (1 + np.abs(m).max())):
            raise ValueError("matrix must be finite and symmetric")
        if np.linalg.eigvalsh(m).min() <= 0:
            raise ValueError("matrix must be positive definite")
        return self

    # -- geometry ----------------------------------------------------------------------

    def _axis_index(self) -> list[int]:
        where = {n: i for i, n in enumerate(self.names)}
        return [where[a] for a in self.axes]

    def _c_m(self) -> tuple[FloatArray, FloatArray]:
        return np.asarray(self.center, dtype=np.float64), np.asarray(self.matrix, dtype=np.float64)

    def radius(self, z: FloatArray) -> FloatArray:
        """Mahalanobis radius of each row of ``z`` (``n x dim``): 1 on the surface."""
        z = _as_points(z, self.dim)
        c, m = self._c_m()
        d = z[:, self._axis_index()] - c
        r: FloatArray = np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", d, m, d), 0.0))
        return r

    def semi_axes(self) -> FloatArray:
        """Lengths of the semi-axes, shortest first (``len(axes)``)."""
        _, m = self._c_m()
        return np.sort(1.0 / np.sqrt(np.linalg.eigvalsh(m)))

    def contains(self, z: FloatArray) -> BoolArray:
        """Which of the ``n`` points (rows of ``z``) lie inside; a length-``n`` mask."""
        return self._in_box(z) & (self.radius(z) <= 1.0 + 1e-9)

    def _ball_to_ellipsoid(self) -> FloatArray:
        """``L`` with ``Lᵀ M L = I``, so ``center + L u`` maps the unit ball onto the ellipsoid."""
        _, m = self._c_m()
        return np.linalg.cholesky(np.linalg.inv(m))

    def _from_ball(self, n: int, rng: np.random.Generator) -> FloatArray:
        c, _ = self._c_m()
        k = len(c)
        g = rng.standard_normal((n, k))
        u = g / np.linalg.norm(g, axis=1, keepdims=True) * rng.random((n, 1)) ** (1.0 / k)
        out: FloatArray = c + u @ self._ball_to_ellipsoid().T
        return out

    def sample(self, n: int, rng: np.random.Generator) -> FloatArray:
        """``n x dim`` points uniform in the ellipsoid ∩ box ∩ cube.

        Points of the unit ball are mapped onto the ellipsoid and rejected outside the
        box; after a bounded number of rounds any shortfall is filled by pulling extra
        draws radially towards the centre until they are inside (the centre lies in the
        cube, so this always succeeds, at the price of slight non-uniformity).
        """
        lo, hi = self._lo_hi()
        axis = self._axis_index()
        others = [i for i in range(self.dim) if i not in axis]
        out = np.empty((0, self.dim))
        for _ in range(_SAMPLE_ROUNDS):
            if len(out) >= n:
                break
            draw = lo + rng.random((2 * (n - len(out)) + 8, self.dim)) * (hi - lo)
            draw[:, axis] = self._from_ball(len(draw), rng)
            out = np.vstack([out, draw[self._in_box(draw)]])
        if len(out) < n:
            extra = lo + rng.random((n - len(out), self.dim)) * (hi - lo)
            extra[:, axis] = self._from_ball(len(extra), rng)
            out = np.vstack([out, self.pull_inside(extra)])
        out = out[:n]
        out[:, others] = np.clip(out[:, others], lo[others], hi[others])
        return out

    def pull_inside(self, z: FloatArray) -> FloatArray:
        """Move each row of ``z`` (``n x dim``) towards the centre until it is inside.

        Along the segment from the centre, the region is convex and contains the centre
        (clipped to the box), so the first inside point found by bisection is inside.
        """
        z = _as_points(z, self.dim).copy()
        lo, hi = self._lo_hi()
        axis = self._axis_index()
        anchor = np.clip((lo + hi) / 2, lo, hi)
        c, _ = self._c_m()
        anchor[axis] = np.clip(c, lo[axis], hi[axis])
        z = np.clip(z, lo, hi)
        inside = self.contains(z)
        for i in np.flatnonzero(~inside):
            a, b = 0.0, 1.0
            for _ in range(40):
                t = (a + b) / 2
                if self.contains(anchor + t * (z[i] - anchor))[0]:
                    a = t
                else:
                    b = t
            z[i] = anchor + a * (z[i] - anchor)
        return z

    def volume_fraction(self) -> float:
        """Volume of ellipsoid ∩ box ∩ cube (a seeded Monte-Carlo estimate for the clip).

        The ellipsoid's own volume is exact (unit-ball volume over ``sqrt(det M)``); the
        share of it inside the box is estimated from a fixed-seed sample, so the number is
        reproducible. The other coordinates contribute their side lengths.
        """
        _, m = self._c_m()
        lo, hi = self._lo_hi()
        k = len(self.axes)
        ball = math.pi ** (k / 2) / math.gamma(k / 2 + 1)
        vol = ball / math.sqrt(float(np.linalg.det(m)))
        rng = np.random.default_rng(_VOLUME_SEED)
        axis = self._axis_index()
        pts = self._from_ball(_VOLUME_DRAWS, rng)
        share = float(np.mean(np.all((pts >= lo[axis] - _TOL) & (pts <= hi[axis] + _TOL), axis=1)))
        others = [i for i in range(self.dim) if i not in axis]
        side = float(np.prod(hi[others] - lo[others])) if others else 1.0
        return float(min(1.0, vol * share) * side * self._categorical_fraction())

    def expanded(self, factor: float) -> Ellipsoid:
        """Semi-axes and the non-ellipsoid half-widths multiplied by ``factor``."""
        f = max(1.0, factor)
        c, m = self._c_m()
        lower, upper = _grow(*self._lo_hi(), f)
        return ellipsoid_from(
            names=self.names,
            axes=self.axes,
            center=c,
            matrix=m / f**2,
            lower=lower,
            upper=upper,
            categorical_subsets={},
            categorical_choices=self.categorical_choices,
        )


def ellipsoid_from(
    *,
    names: list[str],
    axes: list[str],
    center: FloatArray,
    matrix: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    categorical_subsets: dict[str, list[str]],
    categorical_choices: dict[str, list[str]],
) -> Ellipsoid:
    """Build an ellipsoid whose box on ``axes`` is its bounding box clipped to the cube.

    Args:
        names: every constrained coordinate.
        axes: the coordinates the ellipsoid spans (a subset of ``names``).
        center: ``len(axes)`` centre.
        matrix: ``len(axes) x len(axes)`` positive-definite shape matrix.
        lower: ``len(names)`` box lower bounds (those on ``axes`` are recomputed).
        upper: ``len(names)`` box upper bounds (those on ``axes`` are recomputed).
        categorical_subsets: choices kept per categorical parameter.
        categorical_choices: every choice per categorical parameter.
    """
    matrix = (matrix + matrix.T) / 2
    half = np.sqrt(np.diag(np.linalg.inv(matrix)))
    lo = np.asarray(lower, dtype=np.float64).copy()
    hi = np.asarray(upper, dtype=np.float64).copy()
    where = {n: i for i, n in enumerate(names)}
    for j, a in enumerate(axes):
        lo[where[a]] = min(1.0, max(0.0, center[j] - half[j]))
        hi[where[a]] = min(1.0, max(0.0, center[j] + half[j]))
    return Ellipsoid(
        names=list(names),
        lower=lo.tolist(),
        upper=hi.tolist(),
        axes=list(axes),
        center=[float(v) for v in center],
        matrix=matrix.tolist(),
        categorical_subsets=categorical_subsets,
        categorical_choices=categorical_choices,
    )


def _grow(lo: FloatArray, hi: FloatArray, factor: float) -> tuple[FloatArray, FloatArray]:
    mid, half = (lo + hi) / 2, (hi - lo) / 2 * factor
    return np.clip(mid - half, 0.0, 1.0), np.clip(mid + half, 0.0, 1.0)


def _as_points(z: FloatArray, dim: int) -> FloatArray:
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    if z.shape[1] != dim:
        raise ValueError(f"expected points with {dim} coordinates, got {z.shape[1]}")
    return z


AnyRegion = Annotated[Box | Ellipsoid, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[Box | Ellipsoid] = TypeAdapter(AnyRegion)


def region_from_json(data: object) -> Box | Ellipsoid:
    """Read a region written by ``to_json`` (the ``kind`` field picks the class)."""
    return _ADAPTER.validate_python(data)
