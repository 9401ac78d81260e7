"""The contract every designer passes: count, bounds, types, conditions, seeds, pending.

Each designer is built through the registry exactly as the service builds it, fed a
history and asked for points; the assertions are what workers and services rely on. The
suite runs over every algorithm the registry offers (a newly registered one is covered
without editing this file) and over the transfer ``RegionDesigner`` wrapped around a
model-based and a space-filling designer, since a study with a transfer region is served
by the wrapper, not by the bare designer.
"""

from __future__ import annotations

import math

import pytest

from hpo_service.domain import (
    CategoricalParameter,
    Condition,
    FloatParameter,
    IntParameter,
    Objective,
    OrdinalParameter,
    Params,
    SearchSpace,
    StudyConfig,
    Trial,
    TrialState,
)
from hpo_service.domain.region import Box
from hpo_service.engine.designer import Designer
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.engine.registry import available_algorithms, make_designer
from hpo_service.transfer.designer import RegionDesigner

_REGION = "region:"
DESIGNERS = [*available_algorithms(), f"{_REGION}gp", f"{_REGION}random"]

MIXED = SearchSpace(
    parameters=[
        FloatParameter(name="lr", low=1e-4, high=1e-1, scale="log"),
        IntParameter(name="layers", low=1, high=6),
        OrdinalParameter(name="batch", values=[16, 32, 64, 128], scale="log"),
        CategoricalParameter(name="opt", choices=["adam", "sgd"]),
        FloatParameter(
            name="momentum", low=0.0, high=0.99, conditions=Condition(parent="opt", values=["sgd"])
        ),
    ]
)
CONTINUOUS = SearchSpace(
    parameters=[FloatParameter(name=f"x{i}", low=-2.0, high=3.0) for i in range(3)]
)
# Regions (in the unit cube of each space) and seeds for the wrapped designers; both
# categories stay in the region so the condition on momentum is exercised.
_REGIONS = {
    id(MIXED): Box(
        names=["lr", "layers", "batch", "momentum"],
        lower=[0.2, 0.0, 0.25, 0.0],
        upper=[0.8, 0.7, 1.0, 1.0],
        categorical_subsets={"opt": ["adam", "sgd"]},
        categorical_choices={"opt": ["adam", "sgd"]},
    ),
    id(CONTINUOUS): Box(names=["x0", "x1", "x2"], lower=[0.1] * 3, upper=[0.6] * 3),
}
_SEEDS: dict[int, list[Params]] = {
    id(MIXED): [{"lr": 0.01, "layers": 2, "batch": 64, "opt": "sgd", "momentum": 0.5}],
    id(CONTINUOUS): [{"x0": 0.0, "x1": 0.5, "x2": -1.0}],
}


def _objective(params: Params) -> float:
    value = 0.0
    for name, v in sorted(params.items()):
        if isinstance(v, str):
            value += 0.3 if v == "sgd" else 0.0
        elif name == "lr":
            value += (math.log10(float(v)) + 2.5) ** 2
        else:
            value += 0.1 * (float(v) - 1.0) ** 2
    return value


def _history(space: SearchSpace, n: int, seed: int = 7) -> list[Trial]:
    config = StudyConfig(space=space, objective=Objective(metric="loss"), algorithm="random")
    designer = make_designer(config, seed)
    trials: list[Trial] = []
    for i, s in enumerate(designer.suggest(n)):
        trials.append(
            Trial(
                id=f"t{i}",
                study_id="s",
                number=i,
                params=s.params,
                state=TrialState.COMPLETED,
                result={"loss": _objective(s.params)},
            )
        )
    return trials


def _pending(params: list[Params], start: int) -> list[Trial]:
    return [
        Trial(id=f"p{i}", study_id="s", number=start + i, params=p, state=TrialState.ACTIVE)
        for i, p in enumerate(params)
    ]


def _config(space: SearchSpace, algorithm: str, seed: int = 3) -> StudyConfig:
    return StudyConfig(
        space=space, objective=Objective(metric="loss"), algorithm=algorithm, seed=seed
    )


def _designer(kind: str, space: SearchSpace, seed: int, config_seed: int = 3) -> Designer:
    """A registered designer by name, or ``region:<name>``: it inside the transfer wrapper."""
    if not kind.startswith(_REGION):
        return make_designer(_config(space, kind, config_seed), seed)
    config = _config(space, kind.removeprefix(_REGION), config_seed)
    return RegionDesigner(
        config,
        seed,
        region=_REGIONS[id(space)],
        seeds=_SEEDS[id(space)],
        make_inner=make_designer,
        make_encoder=SpaceEncoder,
    )


@pytest.fixture(scope="module")
def mixed_history() -> list[Trial]:
    return _history(MIXED, 14)


def test_the_built_in_designers_are_registered() -> None:
    assert {"random", "sobol", "gp", "local"} <= set(available_algorithms())


@pytest.mark.parametrize("algorithm", DESIGNERS)
@pytest.mark.parametrize("count", [1, 3])
def test_returns_count_valid_assignments(
    algorithm: str, count: int, mixed_history: list[Trial]
) -> None:
    designer = _designer(algorithm, MIXED, 3)
    designer.update(mixed_history, [])
    out = designer.suggest(count)
    assert len(out) == count
    for s in out:
        # validate_params checks bounds, types, grids, choices and conditions exactly.
        assert MIXED.validate_params(s.params) == s.params
        assert isinstance(s.params["layers"], int)
        assert s.params["batch"] in (16, 32, 64, 128)
        assert ("momentum" in s.params) == (s.params["opt"] == "sgd")


@pytest.mark.parametrize("algorithm", DESIGNERS)
def test_empty_history_and_zero_count(algorithm: str) -> None:
    designer = _designer(algorithm, CONTINUOUS, 1)
    designer.update([], [])
    assert designer.suggest(0) == []
    out = designer.suggest(2)
    assert len(out) == 2
    for s in out:
        assert CONTINUOUS.validate_params(s.params) == s.params


@pytest.mark.parametrize("algorithm", DESIGNERS)
def test_same_seed_same_history_same_suggestions(
    algorithm: str, mixed_history: list[Trial]
) -> None:
    runs = []
    for _ in range(2):
        designer = _designer(algorithm, MIXED, 11, config_seed=11)
        designer.update(mixed_history, [])
        runs.append([s.params for s in designer.suggest(2)])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("algorithm", DESIGNERS)
def test_never_reproposes_pending_or_completed(algorithm: str, mixed_history: list[Trial]) -> None:
    first = _designer(algorithm, MIXED, 3)
    first.update(mixed_history, [])
    proposed = [s.params for s in first.suggest(2)]
    pending = _pending(proposed, len(mixed_history))
    second = _designer(algorithm, MIXED, 3)
    second.update(mixed_history, pending)
    again = [s.params for s in second.suggest(2)]
    known = [t.params for t in mixed_history] + proposed
    assert all(p not in known for p in again)
    assert again[0] != again[1]


@pytest.mark.parametrize("algorithm", DESIGNERS)
def test_failed_and_infeasible_trials_are_tolerated(
    algorithm: str, mixed_history: list[Trial]
) -> None:
    odd = [
        Trial(
            id="f",
            study_id="s",
            number=100,
            params=mixed_history[0].params,
            state=TrialState.FAILED,
            error="oom",
        ),
        Trial(
            id="i",
            study_id="s",
            number=101,
            params=mixed_history[1].params,
            state=TrialState.INFEASIBLE,
        ),
        Trial(
            id="n",
            study_id="s",
            number=102,
            params=mixed_history[2].params,
            state=TrialState.COMPLETED,
            result={"other": 1.0},
        ),
    ]
    designer = _designer(algorithm, MIXED, 5)
    designer.update([*mixed_history, *odd], [])
    out = designer.suggest(1)
    assert len(out) == 1
    assert MIXED.validate_params(out[0].params) == out[0].params
