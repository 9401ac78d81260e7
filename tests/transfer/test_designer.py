"""RegionDesigner: seeds first, proposals inside the region, the negative-transfer guard."""

from __future__ import annotations

import numpy as np
import pytest

from hpo_service.domain import Objective, SearchSpace, StudyConfig, Trial, TrialState
from hpo_service.domain.region import Box, ellipsoid_from
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.engine.registry import make_designer
from hpo_service.transfer.designer import GuardOptions, RegionDesigner, narrowed_space

SPACE = SearchSpace.model_validate(
    {
        "parameters": [
            {"name": "x", "type": "float", "low": 0.0, "high": 10.0},
            {"name": "lr", "type": "float", "low": 1e-4, "high": 1.0, "scale": "log"},
            {"name": "n", "type": "int", "low": 1, "high": 8},
            {"name": "b", "type": "ordinal", "values": [16, 32, 64, 128], "scale": "log"},
            {"name": "opt", "type": "categorical", "choices": ["adam", "sgd"]},
            {
                "name": "mom",
                "type": "float",
                "low": 0.0,
                "high": 1.0,
                "conditions": {"parent": "opt", "values": ["sgd"]},
            },
        ]
    }
)
NAMES = ["x", "lr", "n", "b", "mom"]
BOX = Box(
    names=NAMES,
    lower=[0.2, 0.3, 0.25, 0.3, 0.0],
    upper=[0.4, 0.6, 0.5, 0.7, 1.0],
    categorical_subsets={"opt": ["adam"]},
    categorical_choices={"opt": ["adam", "sgd"]},
)
AXES = ["x", "lr", "n"]
ELLIPSOID = ellipsoid_from(
    names=NAMES,
    axes=AXES,
    center=np.array([0.3, 0.45, 0.4]),
    matrix=np.diag([1 / 0.15**2, 1 / 0.2**2, 1 / 0.2**2]),
    lower=np.array(BOX.lower),
    upper=np.array(BOX.upper),
    categorical_subsets={},
    categorical_choices={"opt": ["adam", "sgd"]},
)
SEEDS = [{"x": 3.0, "lr": 0.01, "n": 3, "b": 64, "opt": "adam"}]


def designer(region, algorithm: str = "random", seed: int = 0, guard=None) -> RegionDesigner:
    config = StudyConfig(space=SPACE, objective=Objective(metric="loss"), algorithm=algorithm)
    return RegionDesigner(
        config,
        seed,
        region=region,
        seeds=SEEDS,
        make_inner=make_designer,
        make_encoder=SpaceEncoder,
        guard=guard,
    )


def trial(number: int, params, value: float | None = None, source: str = "engine", meta=None):
    return Trial(
        id=f"t{number}",
        study_id="s",
        number=number,
        params=params,
        state=TrialState.COMPLETED if value is not None else TrialState.ACTIVE,
        source=source,
        result={"loss": value} if value is not None else None,
        metadata=meta or {},
    )


def test_narrowed_space_is_the_bounding_box_in_natural_units() -> None:
    narrowed = narrowed_space(SPACE, BOX, SpaceEncoder)
    x = narrowed.get("x")
    assert (x.low, x.high) == pytest.approx((2.0, 4.0))
    assert narrowed.get("opt").choices == ["adam"]
    assert "mom" not in narrowed.names  # its parent's value "sgd" was cut away
    n = narrowed.get("n")
    assert n.low < n.high


@pytest.mark.parametrize("region", [BOX, ELLIPSOID], ids=["box", "ellipsoid"])
@pytest.mark.parametrize("algorithm", ["random", "sobol"])
def test_seeds_first_then_points_inside(region, algorithm: str) -> None:
    d = designer(region, algorithm)
    d.update([], [])
    out = d.suggest(12)
    assert len(out) == 12
    assert out[0].source == "transfer_seed"
    assert out[0].params == SEEDS[0]
    for s in out[1:]:
        assert d.inside(s.params), s
        SPACE.validate_params(s.params)
        assert s.metadata["transfer"]["level"] == 0
    assert len({str(sorted(s.params.items())) for s in out}) == 12


def test_seed_already_tried_is_not_proposed_again() -> None:
    d = designer(BOX)
    d.update([trial(0, SEEDS[0], 1.0, "transfer_seed")], [])
    assert all(s.source != "transfer_seed" for s in d.suggest(3))


def test_same_seed_same_suggestions() -> None:
    a, b = designer(ELLIPSOID, seed=5), designer(ELLIPSOID, seed=5)
    a.update([], [])
    b.update([], [])
    assert [s.params for s in a.suggest(6)] == [s.params for s in b.suggest(6)]


@pytest.mark.filterwarnings("ignore:A not p.d.")
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_gp_inside_an_ellipsoid() -> None:
    d0 = designer(ELLIPSOID, "random")
    d0.update([], [])
    history = [
        trial(i, s.params, (s.params["x"] - 3.3) ** 2 + abs(np.log10(s.params["lr"]) + 2))
        for i, s in enumerate(d0.suggest(10))
    ]
    d = designer(ELLIPSOID, "gp", guard=GuardOptions(min_trials=1000))
    d.update(history, [])
    out = d.suggest(2)
    assert len(out) == 2
    for s in out:
        assert d.inside(s.params)
        assert s.source in ("transfer_region", "fallback_random")


def test_guard_expands_when_the_best_presses_on_the_boundary() -> None:
    d0 = designer(BOX, "random")
    d0.update([], [])
    proposals = [s.params for s in d0.suggest(12)[1:]]
    # the objective decreases with x: the best point is the one at the box's upper x edge
    edge = {**proposals[0], "x": 4.0}
    history = [trial(i, p, 10.0 - p["x"]) for i, p in enumerate([*proposals, edge])]
    d = designer(BOX, "random")
    d.update(history, [])
    assert d.level == 1
    assert "x at its upper bound" in d.expanded_because
    out = d.suggest(3)
    assert all(s.metadata["transfer"]["level"] == 1 for s in out)
    assert out[0].metadata["transfer"]["version"] == 2
    assert "expanded" in out[0].metadata["transfer"]
    # the level sticks: a later request sees it on the trials
    later = designer(BOX, "random", guard=GuardOptions(min_trials=10_000))
    later.update([*history, trial(99, out[0].params, 5.0, meta=out[0].metadata)], [])
    assert later.level == 1


def test_guard_expands_when_an_outside_point_is_clearly_better() -> None:
    d0 = designer(BOX, "random")
    d0.update([], [])
    inside = [trial(i, s.params, 5.0 + i) for i, s in enumerate(d0.suggest(9)[1:])]
    outside = trial(50, {"x": 9.0, "lr": 0.5, "n": 8, "b": 128, "opt": "sgd", "mom": 0.5}, 0.0)
    d = designer(BOX, "random")
    d.update([*inside, outside], [])
    assert d.level == 1
    assert "outside the region beats" in d.expanded_because


def test_no_guard_without_enough_evidence() -> None:
    d = designer(BOX, "random")
    d.update([trial(0, SEEDS[0], 1.0, "transfer_seed")], [])
    assert d.level == 0


def test_warm_start_only_searches_the_full_space() -> None:
    d = designer(None, "random")
    d.update([], [])
    out = d.suggest(30)
    assert out[0].source == "transfer_seed"
    assert {s.source for s in out[1:]} == {"engine"}
    assert any(s.params["opt"] == "sgd" for s in out)
