"""Property tests: encoding is exact and invertible on every valid assignment."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hpo_service.domain import (
    CategoricalParameter,
    Condition,
    FloatParameter,
    IntParameter,
    OrdinalParameter,
    Params,
    SearchSpace,
)
from hpo_service.engine.encoding import SpaceEncoder


@st.composite
def parameters(draw: st.DrawFn, name: str) -> object:
    kind = draw(st.sampled_from(["float", "int", "ordinal", "categorical"]))
    log = draw(st.booleans())
    if kind == "float":
        low = draw(st.floats(1e-3 if log else -100, 10, allow_nan=False))
        width = draw(st.floats(1e-3, 100, allow_nan=False))
        return FloatParameter(
            name=name, low=low, high=low + width, scale="log" if log else "linear"
        )
    if kind == "int":
        low = draw(st.integers(1 if log else -50, 50))
        high = draw(st.integers(low + 1, low + 200))
        return IntParameter(name=name, low=low, high=high, scale="log" if log else "linear")
    if kind == "ordinal":
        values = sorted(draw(st.sets(st.integers(1, 1000), min_size=1, max_size=8)))
        return OrdinalParameter(name=name, values=values, scale="log" if log else "linear")
    choices = draw(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=5, unique=True))
    return CategoricalParameter(name=name, choices=choices)


@st.composite
def spaces(draw: st.DrawFn) -> SearchSpace:
    n = draw(st.integers(1, 5))
    params = [draw(parameters(f"p{i}")) for i in range(n)]
    # Optionally make the last parameter conditional on a categorical parent.
    parents = [p for p in params[:-1] if isinstance(p, CategoricalParameter)]
    if parents and draw(st.booleans()):
        parent = parents[0]
        child = params[-1].model_copy(
            update={"conditions": Condition(parent=parent.name, values=[parent.choices[0]])}
        )
        params[-1] = child
    return SearchSpace(parameters=params)


@st.composite
def space_and_assignment(draw: st.DrawFn) -> tuple[SearchSpace, Params]:
    space = draw(spaces())
    out: Params = {}
    for p in space.parameters:
        if not space.is_active(p.name, out):
            continue
        if isinstance(p, FloatParameter):
            out[p.name] = draw(st.floats(p.low, p.high, allow_nan=False))
        elif isinstance(p, IntParameter):
            out[p.name] = draw(st.integers(p.low, p.high))
        elif isinstance(p, OrdinalParameter):
            out[p.name] = draw(st.sampled_from(p.values))
        else:
            out[p.name] = draw(st.sampled_from(p.choices))
    return space, out


@settings(max_examples=200, deadline=None)
@given(space_and_assignment())
def test_decode_encode_round_trip(case: tuple[SearchSpace, Params]) -> None:
    space, params = case
    enc = SpaceEncoder(space)
    x = enc.encode(params)
    assert x.shape == (enc.dim,)
    assert np.all((x >= 0.0) & (x <= 1.0))
    back = enc.decode(x)
    assert back.keys() == params.keys()
    for name, value in params.items():
        if isinstance(value, float) and not isinstance(space.get(name), OrdinalParameter):
            assert np.isclose(back[name], value, rtol=1e-9, atol=1e-12)
        else:
            assert back[name] == value
    assert space.validate_params(back) == back


@settings(max_examples=100, deadline=None)
@given(spaces(), st.integers(0, 2**32 - 1))
def test_any_cube_point_decodes_to_a_valid_assignment(space: SearchSpace, seed: int) -> None:
    enc = SpaceEncoder(space)
    xs = np.random.default_rng(seed).random((16, enc.dim))
    for params in enc.decode_many(xs):
        assert space.validate_params(params) == params


@settings(max_examples=100, deadline=None)
@given(spaces(), st.integers(0, 2**32 - 1))
def test_project_is_encode_of_decode_and_idempotent(space: SearchSpace, seed: int) -> None:
    enc = SpaceEncoder(space)
    xs = np.random.default_rng(seed).uniform(-0.2, 1.2, (32, enc.dim))
    projected = enc.project(xs)
    np.testing.assert_allclose(projected, enc.encode_many(enc.decode_many(xs)), atol=1e-12)
    np.testing.assert_allclose(enc.project(projected), projected, atol=1e-12)


def test_grid_lists_small_discrete_parameters_only() -> None:
    space = SearchSpace(
        parameters=[
            FloatParameter(name="f", low=0, high=1),
            IntParameter(name="i", low=1, high=4),
            IntParameter(name="big", low=0, high=10**6),
            OrdinalParameter(name="o", values=[1, 10, 100], scale="log"),
            CategoricalParameter(name="c", choices=["a", "b"]),
        ]
    )
    enc = SpaceEncoder(space)
    assert enc.grid("f") is None
    assert enc.grid("c") is None
    assert enc.grid("big") is None
    np.testing.assert_allclose(enc.grid("i"), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(enc.grid("o"), [0.0, 0.5, 1.0])


@settings(max_examples=60, deadline=None)
@given(st.lists(space_and_assignment(), min_size=1, max_size=1), st.integers(0, 2**32 - 1))
def test_encode_many_matches_encode(cases: list[tuple[SearchSpace, Params]], seed: int) -> None:
    space, _ = cases[0]
    enc = SpaceEncoder(space)
    xs = np.random.default_rng(seed).random((8, enc.dim))
    assignments = enc.decode_many(xs)
    np.testing.assert_allclose(
        enc.encode_many(assignments), np.stack([enc.encode(a) for a in assignments]), atol=1e-12
    )
