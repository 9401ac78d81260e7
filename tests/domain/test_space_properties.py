"""Property tests: every decoded point is valid; validation accepts exactly in-range values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpo_service.domain import SearchSpace
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.errors import InvalidInputError


@st.composite
def spaces(draw: st.DrawFn) -> SearchSpace:
    n = draw(st.integers(1, 5))
    params = []
    for i in range(n):
        kind = draw(st.sampled_from(["float", "int", "ordinal", "categorical"]))
        log = draw(st.booleans())
        if kind == "float":
            low = draw(st.floats(1e-6, 10.0)) if log else draw(st.floats(-100, 100))
            width = draw(st.floats(1e-3, 1000))
            params.append(
                {
                    "name": f"p{i}",
                    "type": "float",
                    "low": low,
                    "high": low + width,
                    "scale": "log" if log else "linear",
                }
            )
        elif kind == "int":
            low = draw(st.integers(1, 50)) if log else draw(st.integers(-50, 50))
            params.append(
                {
                    "name": f"p{i}",
                    "type": "int",
                    "low": low,
                    "high": low + draw(st.integers(1, 500)),
                    "scale": "log" if log else "linear",
                }
            )
        elif kind == "ordinal":
            values = sorted(set(draw(st.lists(st.integers(1, 1000), min_size=1, max_size=6))))
            params.append(
                {
                    "name": f"p{i}",
                    "type": "ordinal",
                    "values": values,
                    "scale": "log" if log else "linear",
                }
            )
        else:
            k = draw(st.integers(1, 4))
            params.append(
                {"name": f"p{i}", "type": "categorical", "choices": [f"c{j}" for j in range(k)]}
            )
    if n >= 2 and params[0]["type"] == "categorical" and draw(st.booleans()):
        params[1]["conditions"] = {"parent": "p0", "values": [params[0]["choices"][0]]}
    return SearchSpace.model_validate({"parameters": params})


@settings(max_examples=150, deadline=None)
@given(space=spaces(), u=st.lists(st.floats(0, 1), min_size=30, max_size=30))
def test_decoded_points_validate_and_round_trip(space: SearchSpace, u: list[float]) -> None:
    enc = SpaceEncoder(space)
    x = np.resize(np.array(u), enc.dim)
    params = enc.decode(x)
    assert space.validate_params(params) == params
    again = enc.decode(enc.encode(params))
    assert again.keys() == params.keys()
    for name, value in params.items():
        if isinstance(value, float):  # affine maps in floating point: equal to the last ulps
            assert math.isclose(again[name], value, rel_tol=1e-12, abs_tol=1e-12), name
        else:  # ints, grid values and choices round-trip exactly
            assert again[name] == value, name


@settings(max_examples=100, deadline=None)
@given(low=st.floats(-1e6, 1e6), width=st.floats(1e-6, 1e6), t=st.floats(-0.5, 1.5))
def test_float_validation_accepts_exactly_the_interval(low: float, width: float, t: float) -> None:
    high = low + width
    if not high > low:
        return
    space = SearchSpace.model_validate(
        {"parameters": [{"name": "x", "type": "float", "low": low, "high": high}]}
    )
    value = low + t * (high - low)
    if low <= value <= high:
        assert space.validate_params({"x": value}) == {"x": value}
    else:
        with pytest.raises(InvalidInputError) as err:
            space.validate_params({"x": value})
        assert err.value.errors[0].loc == ("x",)
        assert "outside" in err.value.errors[0].msg


def test_int_rejects_fractions_and_bools() -> None:
    space = SearchSpace.model_validate(
        {"parameters": [{"name": "n", "type": "int", "low": 0, "high": 9}]}
    )
    assert space.validate_params({"n": 3.0}) == {"n": 3}
    for bad in (3.5, True, "3", math.nan):
        with pytest.raises(InvalidInputError):
            space.validate_params({"n": bad})


def test_conditions_cycle_is_rejected() -> None:
    with pytest.raises(ValueError, match="cycle"):
        SearchSpace.model_validate(
            {
                "parameters": [
                    {
                        "name": "a",
                        "type": "categorical",
                        "choices": ["x"],
                        "conditions": {"parent": "b", "values": ["x"]},
                    },
                    {
                        "name": "b",
                        "type": "categorical",
                        "choices": ["x"],
                        "conditions": {"parent": "a", "values": ["x"]},
                    },
                ]
            }
        )
