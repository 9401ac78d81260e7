"""GP designer behaviour beyond the shared contract: goals, batches, objectives, limits."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pytest
import torch

from hpo_service.domain import (
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    Objective,
    OutcomeConstraint,
    Params,
    SearchSpace,
    StudyConfig,
    Trial,
    TrialState,
)
from hpo_service.engine.acqf_optim import AcqfOptions, MixedGeometry, maximize_acqf
from hpo_service.engine.device import to_tensor
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.engine.gp import FAILED_RADIUS, GPDesigner, GPOptions, initial_design_size
from hpo_service.engine.gp_model import (
    REFIT_GROWTH,
    REFIT_MIN_ROWS,
    HyperparameterCache,
    fit_gp,
)
from hpo_service.engine.training_set import select_training_rows

LINE = SearchSpace(parameters=[FloatParameter(name="x", low=0.0, high=1.0)])
PLANE = SearchSpace(
    parameters=[
        FloatParameter(name="x", low=0.0, high=1.0),
        FloatParameter(name="y", low=0, high=1),
    ]
)
FAST = GPOptions(
    acqf=AcqfOptions(raw_samples=256, n_restarts=3, maxiter=40, perturbations=64),
    mc_samples=64,
    cache=None,
)


def _trials(
    points: list[Params], values: list[dict[str, float]], state: TrialState = TrialState.COMPLETED
) -> list[Trial]:
    return [
        Trial(id=f"t{i}", study_id="s", number=i, params=p, state=state, result=v)
        for i, (p, v) in enumerate(zip(points, values, strict=True))
    ]


def _grid(n: int) -> list[Params]:
    return [{"x": (i + 0.5) / n} for i in range(n)]


@pytest.mark.parametrize(("goal", "side"), [("minimize", "low"), ("maximize", "high")])
def test_goal_is_respected(goal: str, side: str) -> None:
    # f(x) = x: the minimum is at 0, the maximum at 1.
    points = _grid(8)
    history = _trials(points, [{"f": p["x"]} for p in points])  # type: ignore[misc]
    config = StudyConfig(
        space=LINE,
        objective=Objective(metric="f", goal=goal),  # type: ignore[arg-type]
        algorithm="gp",
        seed=0,
    )
    designer = GPDesigner(config, 0, FAST)
    designer.update(history, [])
    (s,) = designer.suggest(1)
    assert s.metadata["acquisition"] == "qLogNEI"
    x = float(s.params["x"])
    assert x < 0.2 if side == "low" else x > 0.8


def test_initial_design_then_model() -> None:
    assert initial_design_size(1) == 5
    assert initial_design_size(6) == 10
    assert initial_design_size(100) == 20
    config = StudyConfig(space=LINE, objective=Objective(metric="f"), algorithm="gp", seed=0)
    designer = GPDesigner(config, 0, FAST)
    designer.update(_trials(_grid(2), [{"f": 0.0}, {"f": 1.0}]), [])
    assert designer.suggest(1)[0].metadata["phase"] == "initial"
    # Pending points count toward the initial design too.
    pend = [
        Trial(
            id=f"p{i}", study_id="s", number=10 + i, params={"x": 0.1 * i}, state=TrialState.ACTIVE
        )
        for i in range(3)
    ]
    designer.update(_trials(_grid(2), [{"f": 0.0}, {"f": 1.0}]), pend)
    assert designer.suggest(1)[0].metadata["acquisition"] == "BelieverLogEI"


def test_joint_batch_is_distinct_and_avoids_pending() -> None:
    points = _grid(8)
    history = _trials(points, [{"f": (p["x"] - 0.3) ** 2} for p in points])  # type: ignore[operator]
    pending = [Trial(id="p", study_id="s", number=9, params={"x": 0.3}, state=TrialState.ACTIVE)]
    config = StudyConfig(space=LINE, objective=Objective(metric="f"), algorithm="gp", seed=0)
    designer = GPDesigner(config, 0, FAST)
    designer.update(history, pending)
    out = designer.suggest(4)
    xs = [float(s.params["x"]) for s in out]
    assert len(set(xs)) == 4
    assert 0.3 not in xs


def test_infeasible_trials_push_the_search_away() -> None:
    # Everything above 0.5 is infeasible; the objective alone would lead there.
    points = _grid(10)
    ok = [p for p in points if float(p["x"]) < 0.5]
    bad = [p for p in points if float(p["x"]) >= 0.5]
    history = _trials(ok, [{"f": -float(p["x"])} for p in ok])
    history += [
        Trial(id=f"i{i}", study_id="s", number=20 + i, params=p, state=TrialState.INFEASIBLE)
        for i, p in enumerate(bad)
    ]
    history += [Trial(id="f", study_id="s", number=40, params={"x": 0.45}, state=TrialState.FAILED)]
    config = StudyConfig(space=LINE, objective=Objective(metric="f"), algorithm="gp", seed=0)
    designer = GPDesigner(config, 0, FAST)
    designer.update(history, [])
    (s,) = designer.suggest(1)
    assert 0.3 < float(s.params["x"]) < 0.65


def test_multi_objective_with_constraint_uses_nehvi() -> None:
    rng = np.random.default_rng(0)
    points: list[Params] = [{"x": float(a), "y": float(b)} for a, b in rng.random((12, 2))]
    values = [
        {
            "f1": float(p["x"]),
            "f2": 1.0 - float(p["x"]) + float(p["y"]),  # type: ignore[arg-type]
            "mem": float(p["y"]),
        }
        for p in points
    ]
    config = StudyConfig(
        space=PLANE,
        objective=Objective(metric="f1"),
        algorithm="gp",
        seed=0,
        objectives=(Objective(metric="f1"), Objective(metric="f2")),
        constraints=(OutcomeConstraint(metric="mem", op="<=", bound=0.5),),
    )
    designer = GPDesigner(config, 0, FAST)
    designer.update(_trials(points, values), [])
    out = designer.suggest(2)
    assert [s.metadata["acquisition"] for s in out] == ["qLogNEHVI", "qLogNEHVI"]
    assert all(PLANE.validate_params(s.params) == s.params for s in out)


def test_single_objective_constraint_runs() -> None:
    rng = np.random.default_rng(1)
    points: list[Params] = [{"x": float(a), "y": float(b)} for a, b in rng.random((10, 2))]
    values = [{"f": float(p["x"]) ** 2, "mem": float(p["y"])} for p in points]  # type: ignore[arg-type]
    config = StudyConfig(
        space=PLANE,
        objective=Objective(metric="f"),
        algorithm="gp",
        seed=0,
        constraints=(OutcomeConstraint(metric="mem", op=">=", bound=0.3),),
    )
    designer = GPDesigner(config, 0, FAST)
    designer.update(_trials(points, values), [])
    (s,) = designer.suggest(1)
    assert s.metadata["acquisition"] == "qLogNEI"


def test_training_set_cap_keeps_best_recent_and_spread() -> None:
    scores = np.random.default_rng(0).random(5000)
    keep = select_training_rows(scores, 400, seed=0)
    assert len(keep) == 400
    assert np.all(np.diff(keep) > 0)
    assert set(np.argsort(scores)[:100]) <= set(keep)
    assert set(range(4900, 5000)) <= set(keep)
    assert np.array_equal(keep, select_training_rows(scores, 400, seed=0))
    assert np.array_equal(select_training_rows(scores[:300], 400), np.arange(300))


def test_designer_caps_training_rows() -> None:
    rng = np.random.default_rng(0)
    points: list[Params] = [{"x": float(a), "y": float(b)} for a, b in rng.random((60, 2))]
    history = _trials(points, [{"f": float(p["x"]) + float(p["y"])} for p in points])  # type: ignore[arg-type]
    config = StudyConfig(space=PLANE, objective=Objective(metric="f"), algorithm="gp", seed=0)
    options = GPOptions(acqf=FAST.acqf, mc_samples=64, cache=None, training_cap=25)
    designer = GPDesigner(config, 0, options)
    designer.update(history, [])
    assert designer.suggest(1)[0].metadata["n_train"] == 25


def test_fit_warm_start_cache_is_bounded_and_reuses_exact_data() -> None:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.random((20, 2)), dtype=torch.float64)
    y = torch.sin(6 * x[:, :1]) + x[:, 1:]
    cache = HyperparameterCache(max_entries=2)
    _, h1 = fit_gp(x, y, cache=cache, cache_key="a")
    _, h2 = fit_gp(x, y, cache=cache, cache_key="a")
    assert h1 == h2
    fit_gp(x, y, cache=cache, cache_key="b")
    fit_gp(x, y, cache=cache, cache_key="c")
    assert len(cache) == 2
    assert cache.get("a") is None
    lengthscales = h1[0].lengthscales
    assert np.all(lengthscales > 0.01)
    assert np.all(lengthscales < 100)


def test_cache_is_thread_safe() -> None:
    cache = HyperparameterCache(max_entries=8)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.random((12, 2)), dtype=torch.float64)
    y = x.sum(-1, keepdim=True)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            fit_gp(x, y, cache=cache, cache_key=f"k{i % 3}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 3


def test_mixed_geometry_and_acquisition_optimiser_find_a_known_optimum() -> None:
    space = SearchSpace(
        parameters=[
            FloatParameter(name="a", low=0, high=1),
            IntParameter(name="b", low=1, high=5),
            CategoricalParameter(name="c", choices=["p", "q", "r"]),
        ]
    )
    enc = SpaceEncoder(space)
    geo = MixedGeometry.from_encoder(enc)
    assert geo.free.tolist() == [0]
    assert [cols.tolist() for cols, _ in geo.discrete] == [[1], [2, 3, 4]]
    # On the engine's device: the optimiser hands the acquisition CUDA tensors where present.
    target = to_tensor(enc.encode({"a": 0.37, "b": 4, "c": "q"}))

    def acqf(x: torch.Tensor) -> torch.Tensor:
        return -((x - target) ** 2).sum(-1).sum(-1)

    found = maximize_acqf(
        acqf,
        geo,
        enc.project,
        1,
        rng=np.random.default_rng(0),
        anchors=np.zeros((0, enc.dim)),
        lengthscales=np.ones(enc.dim),
        options=AcqfOptions(raw_samples=64, n_restarts=2, perturbations=0),
    )
    best = enc.decode(found.batches[0, 0])
    assert best["b"] == 4
    assert best["c"] == "q"
    assert math.isclose(float(best["a"]), 0.37, abs_tol=1e-3)


def test_large_studies_reuse_hyperparameters_until_the_history_grows() -> None:
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.random((30, 2)), dtype=torch.float64)
    y = torch.as_tensor(np.sin(5 * x.numpy()).sum(1, keepdims=True), dtype=torch.float64)
    cache = HyperparameterCache()
    _, first = fit_gp(x, y, cache=cache, cache_key="k", n_total=REFIT_MIN_ROWS)
    # Different data, but the history grew by less than REFIT_GROWTH: no refit.
    y2 = y + 0.3 * x[:, :1]
    _, same = fit_gp(x, y2, cache=cache, cache_key="k", n_total=REFIT_MIN_ROWS + 1)
    assert same == first
    grown = math.ceil(REFIT_MIN_ROWS * REFIT_GROWTH)
    _, refit = fit_gp(x, y2, cache=cache, cache_key="k", n_total=grown)
    assert refit != first
    # Small studies refit on every change.
    small = HyperparameterCache()
    _, a = fit_gp(x, y, cache=small, cache_key="k", n_total=30)
    _, b = fit_gp(x, y2, cache=small, cache_key="k", n_total=31)
    assert a != b


def test_closed_form_log_ei_when_asked_and_exact() -> None:
    points = _grid(8)
    history = _trials(points, [{"f": (p["x"] - 0.3) ** 2} for p in points])  # type: ignore[operator]
    config = StudyConfig(space=LINE, objective=Objective(metric="f"), algorithm="gp", seed=0)
    options = dataclasses.replace(FAST, analytic=True)
    designer = GPDesigner(config, 0, options)
    designer.update(history, [])
    (s,) = designer.suggest(1)
    assert s.metadata["acquisition"] == "LogEI"
    assert abs(float(s.params["x"]) - 0.3) < 0.15  # type: ignore[arg-type]
    # Pending work makes the plain closed form inexact: the believer's, or qLogNEI.
    pending = [Trial(id="p", study_id="s", number=9, params={"x": 0.3}, state=TrialState.ACTIVE)]
    designer.update(history, pending)
    assert designer.suggest(1)[0].metadata["acquisition"] == "BelieverLogEI"
    designer = GPDesigner(config, 0, dataclasses.replace(options, believer=False))
    designer.update(history, pending)
    assert designer.suggest(1)[0].metadata["acquisition"] == "qLogNEI"
    # A batch is scored jointly, pending points included.
    assert {s.metadata["acquisition"] for s in designer.suggest(2)} == {"qLogNEI"}


def test_spread_starts_take_the_best_the_best_near_the_incumbent_and_a_spread() -> None:
    from hpo_service.engine.acqf_optim import _spread_starts

    values = np.array([-1.0, -50.0, -2.0, -900.0, -0.5, -3.0])  # rows 4, 5 near the best
    chosen = _spread_starts(values, n_sobol=4, n=4, rng=np.random.default_rng(0))
    assert list(chosen[:1]) == [4]  # the best overall
    assert 0 in chosen  # Sobol rows are weighted by exp(v - max v)
    assert 2 in chosen
    assert 3 not in chosen  # negligible acquisition: never a start
    assert len(set(chosen.tolist())) == len(chosen)


@pytest.mark.parametrize("failed", [False, True])
def test_a_failed_point_is_not_proposed_again(failed: bool) -> None:
    # The model leads straight to x = 0.3; when a trial there failed (e.g. it crashed),
    # the next proposal must go elsewhere rather than repeat it. The control (no failed
    # trial) shows the proposal would otherwise land right there.
    points = [p for p in _grid(10) if abs(float(p["x"]) - 0.3) > 0.01]
    history = _trials(points, [{"f": (float(p["x"]) - 0.3) ** 2} for p in points])
    if failed:
        history.append(
            Trial(id="f", study_id="s", number=50, params={"x": 0.3}, state=TrialState.FAILED)
        )
    config = StudyConfig(space=LINE, objective=Objective(metric="f"), algorithm="gp", seed=0)
    designer = GPDesigner(config, 0, FAST)
    designer.update(history, [])
    (s,) = designer.suggest(1)
    distance = abs(float(s.params["x"]) - 0.3)
    if failed:
        assert distance > FAILED_RADIUS
    else:
        assert distance < FAILED_RADIUS


def test_with_pending_trials_the_believer_moves_proposals_away_from_them() -> None:
    # f has its minimum at 0.3; a running trial at 0.25 covers the left side of it, so
    # the next point moves right of where it would go with nothing running.
    points = _grid(8)
    history = _trials(points, [{"f": (p["x"] - 0.3) ** 2} for p in points])  # type: ignore[operator]
    pending = [Trial(id="p", study_id="s", number=9, params={"x": 0.25}, state=TrialState.ACTIVE)]
    config = StudyConfig(space=LINE, objective=Objective(metric="f"), algorithm="gp", seed=0)
    designer = GPDesigner(config, 0, FAST)
    designer.update(history, [])
    (alone,) = designer.suggest(1)
    designer.update(history, pending)
    (s,) = designer.suggest(1)
    assert s.metadata["acquisition"] == "BelieverLogEI"
    assert abs(float(s.params["x"]) - 0.3) < 0.05  # type: ignore[arg-type]
    assert float(s.params["x"]) > float(alone.params["x"]) + 1e-3  # type: ignore[arg-type]
