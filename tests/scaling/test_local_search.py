"""The ``local`` trust-region designer on per-module landscapes with divergence cliffs."""

from __future__ import annotations

import math

import numpy as np

from hpo_service.domain import (
    FloatParameter,
    Objective,
    SearchSpace,
    StudyConfig,
    Trial,
    TrialState,
)
from hpo_service.engine.local_search import LocalSearchDesigner
from hpo_service.engine.random_search import RandomDesigner

NAMES = ["lr.embedding", "lr.hidden", "lr.readout", "init_std.hidden", "wd.hidden"]


def _config(seed: int = 0) -> StudyConfig:
    space = SearchSpace(
        parameters=[FloatParameter(name=n, low=1e-5, high=1.0, scale="log") for n in NAMES]
    )
    return StudyConfig(
        space=space, objective=Objective(metric="loss"), algorithm="local", seed=seed
    )


# A global stage's answer: one shared LR below the cliff, default init and decay.
START = {
    "lr.embedding": 2e-3,
    "lr.hidden": 2e-3,
    "lr.readout": 2e-3,
    "init_std.hidden": 1e-2,
    "wd.hidden": 1e-2,
}
OPT = np.log(np.array([3e-3, 1e-3, 1e-2, 3e-2, 1e-2]))


def _loss(params: dict) -> float | None:
    """Quadratic bowl in log space; diverges when the LR sum crosses a cliff near the optimum."""
    u = np.log(np.array([params[n] for n in NAMES]))
    if u[0] + u[1] + u[2] > OPT[:3].sum() + 1.5:
        return None
    return float(((u - OPT) ** 2 * np.array([1, 2, 0.5, 0.3, 0.1])).sum())


def _run(designer_cls, n: int = 60, seed: int = 0, start: dict | None = None):
    config = _config(seed)
    trials: list[Trial] = []
    if start is not None:
        trials.append(
            Trial(
                id="t0",
                study_id="s",
                number=0,
                params=start,
                state=TrialState.COMPLETED,
                result={"loss": _loss(start)},
            )
        )
    while len(trials) < n:
        designer = designer_cls(config, seed)
        designer.update(trials, [])
        for s in designer.suggest(2):
            value = _loss(s.params)
            state = TrialState.COMPLETED if value is not None else TrialState.FAILED
            trials.append(
                Trial(
                    id=f"t{len(trials)}",
                    study_id="s",
                    number=len(trials),
                    params=s.params,
                    state=state,
                    result=None if value is None else {"loss": value},
                )
            )
    values = [t.result["loss"] for t in trials if t.result]
    return min(values), trials


def test_local_beats_random_from_a_global_incumbent():
    start = START
    local = [_run(LocalSearchDesigner, seed=s, start=start)[0] for s in range(3)]
    rand = [_run(RandomDesigner, seed=s, start=start)[0] for s in range(3)]
    assert np.median(local) < 0.5 * np.median(rand), (local, rand)
    assert np.median(local) < 0.5 * _loss(start)


def test_same_seed_same_suggestions_and_cliffs_avoided():
    _, trials = _run(LocalSearchDesigner, n=30, seed=1, start=START)
    a = LocalSearchDesigner(_config(1), 1)
    a.update(trials, [])
    b = LocalSearchDesigner(_config(1), 1)
    b.update(trials, [])
    sa, sb = a.suggest(3), b.suggest(3)
    assert [s.params for s in sa] == [s.params for s in sb]
    cliffs = a.region.cliffs
    for s in sa:
        x = a.encoder.encode(s.params)
        assert all(np.linalg.norm(x - c) >= a.region.radius / 2 for c in cliffs)
    assert all(math.isfinite(s.metadata["radius"]) for s in sa)


def test_empty_history_starts_at_the_centre():
    d = LocalSearchDesigner(_config(), 0)
    d.update([], [])
    out = d.suggest(3)
    assert len(out) == 3
    assert out[0].params["lr.hidden"] == pytest_approx(math.sqrt(1e-5 * 1.0))


def pytest_approx(v: float):
    import pytest

    return pytest.approx(v, rel=1e-6)
