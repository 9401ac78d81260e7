"""The contract every Region shape passes: contains/sample/volume laws and JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpo_service.domain.region import Box, Ellipsoid, ellipsoid_from, region_from_json


def make_box(lo: list[float], hi: list[float], **extra) -> Box:
    names = [f"x{i}" for i in range(len(lo))]
    return Box(names=names, lower=lo, upper=hi, **extra)


def make_ellipsoid(center: list[float], semi: list[float], angle: float = 0.3) -> Ellipsoid:
    k = len(center)
    rot = np.eye(k)
    if k >= 2:
        c, s = np.cos(angle), np.sin(angle)
        rot[:2, :2] = [[c, -s], [s, c]]
    m = rot @ np.diag(1.0 / np.asarray(semi) ** 2) @ rot.T
    names = [f"x{i}" for i in range(k)]
    return ellipsoid_from(
        names=names,
        axes=names,
        center=np.asarray(center),
        matrix=m,
        lower=np.zeros(k),
        upper=np.ones(k),
        categorical_subsets={},
        categorical_choices={},
    )


REGIONS = {
    "box": make_box([0.2, 0.1, 0.0], [0.6, 0.3, 1.0]),
    "box-categorical": make_box(
        [0.1], [0.9], categorical_subsets={"opt": ["a"]}, categorical_choices={"opt": ["a", "b"]}
    ),
    "ellipsoid": make_ellipsoid([0.5, 0.4, 0.5], [0.2, 0.1, 0.3]),
    "ellipsoid-clipped": make_ellipsoid([0.05, 0.95], [0.3, 0.1]),
}


@pytest.fixture(params=sorted(REGIONS))
def region(request: pytest.FixtureRequest) -> Box | Ellipsoid:
    return REGIONS[request.param]


class TestRegionContract:
    def test_samples_are_inside_the_region_and_the_cube(self, region) -> None:
        pts = region.sample(500, np.random.default_rng(0))
        assert pts.shape == (500, region.dim)
        assert region.contains(pts).all()
        assert ((pts >= 0) & (pts <= 1)).all()

    def test_sampling_is_seeded(self, region) -> None:
        a = region.sample(20, np.random.default_rng(3))
        b = region.sample(20, np.random.default_rng(3))
        np.testing.assert_array_equal(a, b)

    def test_volume_fraction_matches_uniform_cube_hits(self, region) -> None:
        cube = np.random.default_rng(1).random((40_000, region.dim))
        numeric = float(region.contains(cube).mean())
        cats = 1.0
        for name, kept in region.categorical_subsets.items():
            cats *= len(kept) / len(region.categorical_choices[name])
        assert region.volume_fraction() == pytest.approx(numeric * cats, abs=0.01)
        assert 0.0 < region.volume_fraction() <= 1.0

    def test_json_round_trip_is_exact(self, region) -> None:
        again = region_from_json(region.to_json())
        assert type(again) is type(region)
        assert again == region
        pts = np.random.default_rng(2).random((200, region.dim))
        np.testing.assert_array_equal(again.contains(pts), region.contains(pts))

    def test_expansion_contains_the_original(self, region) -> None:
        bigger = region.expanded(2.0)
        pts = region.sample(300, np.random.default_rng(4))
        assert bigger.contains(pts).all()
        assert bigger.volume_fraction() >= region.volume_fraction() - 1e-9
        assert bigger.categorical_subsets == {}

    def test_bounds_enclose_the_region(self, region) -> None:
        pts = region.sample(300, np.random.default_rng(5))
        assert (pts >= np.asarray(region.lower) - 1e-9).all()
        assert (pts <= np.asarray(region.upper) + 1e-9).all()


def test_ellipsoid_rejects_a_non_positive_definite_matrix() -> None:
    with pytest.raises(ValueError, match="positive definite"):
        Ellipsoid(
            names=["a", "b"],
            lower=[0, 0],
            upper=[1, 1],
            axes=["a", "b"],
            center=[0.5, 0.5],
            matrix=[[1.0, 0.0], [0.0, -1.0]],
        )


def test_box_rejects_bounds_outside_the_cube() -> None:
    with pytest.raises(ValueError, match="lower <= upper"):
        make_box([0.5], [1.5])


def test_pull_inside_lands_inside() -> None:
    e = REGIONS["ellipsoid-clipped"]
    far = np.random.default_rng(0).random((50, 2))
    assert e.contains(e.pull_inside(far)).all()


@st.composite
def boxes(draw: st.DrawFn) -> Box:
    k = draw(st.integers(1, 4))
    lo, hi = [], []
    for _ in range(k):
        a = draw(st.floats(0, 0.95))
        b = draw(st.floats(a + 0.01, 1.0))
        lo.append(a)
        hi.append(b)
    return make_box(lo, hi)


@st.composite
def ellipsoids(draw: st.DrawFn) -> Ellipsoid:
    k = draw(st.integers(1, 4))
    center = [draw(st.floats(0.05, 0.95)) for _ in range(k)]
    semi = [draw(st.floats(0.02, 0.6)) for _ in range(k)]
    return make_ellipsoid(center, semi, draw(st.floats(0, 3.14)))


@settings(max_examples=40, deadline=None)
@given(region=st.one_of(boxes(), ellipsoids()), seed=st.integers(0, 2**16))
def test_property_samples_inside_and_round_trip(region, seed: int) -> None:
    pts = region.sample(64, np.random.default_rng(seed))
    assert region.contains(pts).all()
    assert region_from_json(region.to_json()) == region
    assert 0.0 < region.volume_fraction() <= 1.0


@settings(max_examples=40, deadline=None)
@given(region=ellipsoids(), seed=st.integers(0, 2**16))
def test_property_ellipsoid_membership_is_the_radius_law(region, seed: int) -> None:
    center = np.asarray(region.center)[None, :]
    assert region.contains(center).all()
    pts = np.random.default_rng(seed).random((256, region.dim))
    expected = region.radius(pts) <= 1.0 + 1e-9
    np.testing.assert_array_equal(region.contains(pts), expected)
