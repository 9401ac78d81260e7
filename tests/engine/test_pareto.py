from __future__ import annotations

import numpy as np

from hpo_service.domain import (
    FloatParameter,
    Objective,
    OutcomeConstraint,
    SearchSpace,
    StudyConfig,
    Trial,
    TrialState,
)
from hpo_service.engine.pareto import best_trial, best_trials, non_dominated, pareto_front

SPACE = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1)])


def _t(n: int, state: TrialState = TrialState.COMPLETED, **metrics: float) -> Trial:
    return Trial(
        id=f"t{n}",
        study_id="s",
        number=n,
        params={"x": 0.5},
        state=state,
        result=dict(metrics) or None,
    )


def test_non_dominated_keeps_ties_and_drops_dominated() -> None:
    v = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0], [0.5, 3.0]])
    assert non_dominated(v).tolist() == [True, True, False, True, True]


def test_non_dominated_chunks_agree_with_brute_force() -> None:
    v = np.random.default_rng(0).random((2500, 3))
    brute = np.array([not any(np.all(o <= r) and np.any(o < r) for o in v) for r in v[:200]])
    assert np.array_equal(non_dominated(v)[:200], brute)


def test_pareto_front_respects_goals_and_constraints() -> None:
    objectives = [Objective(metric="loss"), Objective(metric="acc", goal="maximize")]
    trials = [
        _t(0, loss=1.0, acc=0.9, mem=1.0),
        _t(1, loss=0.5, acc=0.8, mem=1.0),
        _t(2, loss=0.5, acc=0.7, mem=1.0),  # dominated by 1
        _t(3, loss=0.1, acc=0.95, mem=9.0),  # best but violates mem <= 2
        _t(4, TrialState.FAILED, loss=0.0, acc=1.0, mem=0.0),
        _t(5, loss=0.2),  # missing acc
        _t(6, loss=0.3, acc=0.85),  # missing mem: not known feasible
    ]
    cons = [OutcomeConstraint(metric="mem", op="<=", bound=2.0)]
    assert [t.number for t in pareto_front(trials, objectives, cons)] == [1, 0]
    assert [t.number for t in pareto_front(trials, objectives)] == [3]


def test_best_trial_and_best_trials() -> None:
    trials = [_t(0, loss=2.0), _t(1, loss=1.0), _t(2, loss=1.0), _t(3, TrialState.ACTIVE)]
    best = best_trial(trials, Objective(metric="loss"))
    assert best is not None
    assert best.number == 1
    assert best_trial(trials, Objective(metric="loss", goal="maximize")).number == 0  # type: ignore[union-attr]
    assert best_trial([], Objective(metric="loss")) is None
    single = StudyConfig(space=SPACE, objective=Objective(metric="loss"), algorithm="gp")
    assert [t.number for t in best_trials(trials, single)] == [1]
    multi = StudyConfig(
        space=SPACE,
        objective=Objective(metric="loss"),
        algorithm="gp",
        objectives=(Objective(metric="loss"), Objective(metric="time")),
    )
    trials = [_t(0, loss=1.0, time=1.0), _t(1, loss=0.5, time=2.0), _t(2, loss=2.0, time=2.0)]
    assert [t.number for t in best_trials(trials, multi)] == [1, 0]
    assert best_trials([], multi) == []
