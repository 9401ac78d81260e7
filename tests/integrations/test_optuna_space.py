"""Optuna distributions ↔ service space: every kind maps, and values make the round trip."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo_service.client.models import SearchSpace
from hpo_service.integrations.optuna import SpaceCodec, objectives_spec
from hpo_service.integrations.optuna._history import merged_distributions, observation
from hpo_service.integrations.optuna._space import MAX_GRID, service_name


def _spec(dist: BaseDistribution) -> dict[str, object]:
    [param] = SpaceCodec({"p": dist}).space()["parameters"]
    return dict(param)


@pytest.mark.parametrize(
    ("dist", "spec"),
    [
        (FloatDistribution(-1, 1), {"type": "float", "low": -1, "high": 1, "scale": "linear"}),
        (FloatDistribution(1e-7, 1, log=True), {"type": "float", "low": 1e-7, "scale": "log"}),
        (IntDistribution(1, 100, log=True), {"type": "int", "low": 1, "high": 100, "scale": "log"}),
        (IntDistribution(3, 9, step=2), {"type": "ordinal", "values": [3, 5, 7, 9]}),
        (
            FloatDistribution(0, 1, step=0.25),
            {"type": "ordinal", "values": [0, 0.25, 0.5, 0.75, 1]},
        ),
        (IntDistribution(4, 4), {"type": "ordinal", "values": [4]}),
        (
            CategoricalDistribution([1, None, "a"]),
            {"type": "categorical", "choices": ["1", "None", "a"]},
        ),
    ],
)
def test_each_distribution_has_a_service_parameter(
    dist: BaseDistribution, spec: dict[str, object]
) -> None:
    got = _spec(dist)
    assert {k: got[k] for k in spec} == spec
    SearchSpace.model_validate({"parameters": [got]})  # the SDK's model of API.md's space


@pytest.mark.parametrize(
    "dist",
    [
        FloatDistribution(-10, 10, step=0.5),
        FloatDistribution(0, 100, step=0.01),  # too fine for an ordinal: rounded instead
        IntDistribution(0, 100_000, step=10),
        IntDistribution(-10, 0, step=2),
        FloatDistribution(1e-7, 1, log=True),
        IntDistribution(1, 100, log=True),
    ],
)
def test_service_values_decode_into_the_distribution_with_optunas_types(
    dist: FloatDistribution | IntDistribution,
) -> None:
    codec = SpaceCodec({"x": dist})
    [param] = codec.space()["parameters"]
    if param["type"] == "ordinal":
        candidates = list(param["values"])
    else:
        span = dist.high - dist.low
        candidates = [dist.low, dist.high, dist.low + span / 3, dist.low + span * 0.618]
    for raw in candidates:
        value = codec.decode({"x": raw})["x"]
        assert type(value) is (int if isinstance(dist, IntDistribution) else float)
        assert dist._contains(dist.to_internal_repr(value)), (raw, value)
        assert codec.encode({"x": value}) is not None  # and back


def test_fine_grids_are_continuous_and_rounded() -> None:
    dist = FloatDistribution(0, 100, step=0.01)
    assert MAX_GRID < (100 / 0.01) + 1
    codec = SpaceCodec({"x": dist})
    assert codec.space()["parameters"][0]["type"] == "float"
    assert codec.decode({"x": 37.123456})["x"] == pytest.approx(37.12)


def test_non_string_choices_come_back_as_themselves() -> None:
    dist = CategoricalDistribution([1, "1", None, True, 2.5])
    codec = SpaceCodec({"c": dist})
    labels = codec.space()["parameters"][0]["choices"]
    assert len(set(labels)) == 5  # 1 and "1" would collide: labels carry the index
    for choice, label in zip(dist.choices, labels, strict=True):
        assert codec.encode({"c": choice}) == {"c": label}
        back = codec.decode({"c": label})["c"]
        assert back == choice
        assert type(back) is type(choice)
    assert codec.encode({"c": False}) is None


def test_names_the_service_refuses_get_stable_stand_ins() -> None:
    codec = SpaceCodec({"lr/head": FloatDistribution(0, 1), "ok.name-1": FloatDistribution(0, 1)})
    keys = [p["name"] for p in codec.space()["parameters"]]
    assert "ok.name-1" in keys
    [other] = [k for k in keys if k != "ok.name-1"]
    assert other.startswith("lr_head-")
    assert other == service_name("lr/head")
    assert codec.decode({other: 0.5, "ok.name-1": 0.25}) == {"lr/head": 0.5, "ok.name-1": 0.25}


def test_equal_spaces_have_equal_digests() -> None:
    a = SpaceCodec({"x": FloatDistribution(0, 1), "y": IntDistribution(1, 3)})
    b = SpaceCodec({"y": IntDistribution(1, 3), "x": FloatDistribution(0, 1)})
    c = SpaceCodec({"x": FloatDistribution(0, 2), "y": IntDistribution(1, 3)})
    assert a.digest == b.digest != c.digest


def test_objectives_follow_directions_and_metric_names() -> None:
    mini, maxi = StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE
    assert objectives_spec([mini], None) == [{"metric": "value", "goal": "minimize"}]
    assert objectives_spec([mini, maxi], None) == [
        {"metric": "value_0", "goal": "minimize"},
        {"metric": "value_1", "goal": "maximize"},
    ]
    named = objectives_spec([mini, maxi], ["val loss", "acc"])
    assert [o["metric"] for o in named][1] == "acc"
    assert named[0]["metric"].startswith("val_loss-")


def test_history_merges_ranges_and_leaves_out_what_cannot_merge() -> None:
    def trial(
        params: dict[str, object], dists: dict[str, BaseDistribution]
    ) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(params=params, distributions=dists, value=1.0)

    trials = [
        trial(
            {"x": 0.5, "n": 2, "c": "a", "cond": 1.0, "k": 2},
            {
                "x": FloatDistribution(0, 1),
                "n": IntDistribution(1, 4),
                "c": CategoricalDistribution(["a"]),
                "cond": FloatDistribution(0, 2),
                "k": IntDistribution(0, 4, step=2),
            },
        ),
        trial(
            {"x": 3.0, "n": 9, "c": "b", "k": 3},
            {
                "x": FloatDistribution(0, 5),
                "n": IntDistribution(2, 10),
                "c": CategoricalDistribution(["b", "a"]),
                "k": IntDistribution(1, 5, step=2),  # a grid that does not line up
            },
        ),
    ]
    merged, dropped = merged_distributions(trials)
    assert merged == {
        "x": FloatDistribution(0, 5),
        "n": IntDistribution(1, 10),
        "c": CategoricalDistribution(["a", "b"]),
    }
    assert [d.split(":")[0] for d in dropped] == ["cond", "k"]


def test_an_observation_needs_a_finite_value_and_every_parameter() -> None:
    codec = SpaceCodec({"x": FloatDistribution(0, 1)})
    dists = {"x": FloatDistribution(0, 1)}
    done = optuna.trial.create_trial(params={"x": 0.5}, distributions=dists, value=2.0)
    body = observation(done, codec, ["loss"])
    assert body == {
        "params": {"x": 0.5},
        "result": {"metrics": {"loss": 2.0}},
        "metadata": {"optuna_trial": done.number, "optuna_state": "COMPLETE"},
    }
    assert observation(done, codec, ["loss"], values=[math.inf]) is None
    failed = optuna.trial.create_trial(
        params={"x": 0.5}, distributions=dists, state=TrialState.FAIL
    )
    assert observation(failed, codec, ["loss"]) is None
    elsewhere = SpaceCodec({"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)})
    assert observation(done, elsewhere, ["loss"]) is None
