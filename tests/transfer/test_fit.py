"""Fitting boxes and ellipsoids to winners, including the degenerate cases of TRANSFER.md."""

from __future__ import annotations

import numpy as np
import pytest

from hpo_service.domain import Objective, SearchSpace, Trial, TrialState
from hpo_service.domain.region import Box, Ellipsoid
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.transfer.fit import FitOptions, Winners, fit_region, khachiyan
from hpo_service.transfer.select import (
    SourceStudy,
    choose_sources,
    collect_winners,
    compatibility_problem,
    map_params,
)


def winners(z: np.ndarray, task: list[int] | None = None, min_width: float = 0.05) -> Winners:
    n, d = z.shape
    return Winners(
        names=[f"x{i}" for i in range(d)],
        z=z,
        task=np.asarray(task if task is not None else list(range(n)), dtype=np.int64),
        min_width=np.full(d, min_width),
        axis_ok=[True] * d,
    )


def test_khachiyan_encloses_every_point_tightly() -> None:
    pts = np.random.default_rng(0).random((30, 3))
    c, a = khachiyan(pts)
    d = pts - c
    r = np.einsum("ni,ij,nj->n", d, a, d)
    assert r.max() <= 1.0 + 1e-3
    assert r.max() >= 0.99  # touches the hull: it is not just any enclosing ellipsoid


def test_box_is_min_max_with_margin_and_minimum_width() -> None:
    z = np.array([[0.2, 0.5], [0.4, 0.5], [0.3, 0.5]])
    result = fit_region(winners(z), "box", FitOptions(margin=0.1))
    box = result.region
    assert isinstance(box, Box)
    assert box.lower[0] == pytest.approx(0.18)
    assert box.upper[0] == pytest.approx(0.42)
    assert box.upper[1] - box.lower[1] == pytest.approx(0.05)  # all winners agree: floored
    assert box.contains(z).all()


def test_quantile_box_ignores_a_lone_outlier() -> None:
    rng = np.random.default_rng(1)
    z = np.vstack([0.4 + 0.1 * rng.random((19, 2)), [[0.99, 0.01]]])
    plain = fit_region(winners(z), "box").region
    robust = fit_region(winners(z), "quantile_box").region
    assert robust.volume_fraction() < 0.25 * plain.volume_fraction()


def test_ellipsoid_encloses_winners_and_is_smaller_than_the_box() -> None:
    rng = np.random.default_rng(2)
    t = rng.random(40)
    z = np.c_[0.2 + 0.6 * t, 0.2 + 0.6 * t + 0.05 * rng.standard_normal(40)].clip(0, 1)
    result = fit_region(winners(z), "ellipsoid", FitOptions(slack=False))
    assert isinstance(result.region, Ellipsoid)
    assert result.notes["fallback"] is None
    assert result.region.contains(z).all()
    assert result.region.volume_fraction() < fit_region(winners(z), "box").region.volume_fraction()


def test_collinear_winners_fall_back_to_the_box() -> None:
    t = np.linspace(0.2, 0.8, 10)
    z = np.c_[t, t, 1 - t]  # on a line: the ellipsoid would be flat
    result = fit_region(winners(z), "ellipsoid")
    assert isinstance(result.region, Box)
    assert "rank-deficient" in result.notes["fallback"]


def test_too_few_winners_fall_back_to_the_box() -> None:
    z = np.array([[0.2, 0.3, 0.4], [0.3, 0.4, 0.1]])
    result = fit_region(winners(z), "ellipsoid")
    assert isinstance(result.region, Box)
    assert result.notes["fallback"]


def test_nearly_flat_winners_are_regularised_not_degenerate() -> None:
    rng = np.random.default_rng(3)
    t = rng.random(30)
    z = np.c_[t, 0.5 + 1e-4 * rng.standard_normal(30)]
    result = fit_region(winners(z), "ellipsoid", FitOptions(slack=False))
    region = result.region
    assert isinstance(region, Ellipsoid)
    assert region.semi_axes()[0] >= 0.025 - 1e-9
    assert region.contains(z).all()


def test_slack_drops_a_far_away_task() -> None:
    rng = np.random.default_rng(4)
    near = 0.3 + 0.1 * rng.random((30, 2))
    far = 0.9 + 0.05 * rng.random((5, 2))
    tasks = [i // 5 for i in range(30)] + [6] * 5
    z = np.vstack([near, far])
    robust = fit_region(winners(z, tasks), "ellipsoid")
    plain = fit_region(winners(z, tasks), "ellipsoid", FitOptions(slack=False))
    assert robust.notes["dropped"] >= 5
    assert not robust.region.contains(far).any()
    assert robust.region.volume_fraction() < 0.3 * plain.region.volume_fraction()


def test_slack_keeps_tight_task_clusters_that_spread_evenly() -> None:
    # Converged sources: each task's winners within 0.01, the tasks' optima spread out.
    # (Before the between-task floor, the screen dropped 10 of these 35 winners.)
    rng = np.random.default_rng(1)
    centres = 0.3 + 0.4 * rng.random((7, 3))
    z = np.vstack([c + 0.01 * rng.random((5, 3)) for c in centres])
    tasks = [i // 5 for i in range(35)]
    robust = fit_region(winners(z, tasks), "ellipsoid")
    assert robust.notes["dropped"] == 0
    assert robust.region.contains(z).all()


SPACE = SearchSpace.model_validate(
    {
        "parameters": [
            {"name": "lr", "type": "float", "low": 1e-4, "high": 1.0, "scale": "log"},
            {"name": "layers", "type": "int", "low": 1, "high": 4},
            {"name": "opt", "type": "categorical", "choices": ["adam", "sgd", "lion"]},
        ]
    }
)


def source(study_id: str, values: list[tuple[float, int, str, float]]) -> SourceStudy:
    trials = [
        Trial(
            id=f"{study_id}-{i}",
            study_id=study_id,
            number=i,
            params={"lr": lr, "layers": n, "opt": o},
            state=TrialState.COMPLETED,
            result={"loss": y},
        )
        for i, (lr, n, o, y) in enumerate(values)
    ]
    return SourceStudy(study_id, SPACE, Objective(metric="loss"), trials)


def test_compatibility_matches_name_type_and_overlap() -> None:
    other = SearchSpace.model_validate(
        {"parameters": [{"name": "lr", "type": "int", "low": 1, "high": 3}]}
    )
    assert "int there but float here" in compatibility_problem(SPACE, other)
    far = SearchSpace.model_validate(
        {"parameters": [{"name": "lr", "type": "float", "low": 2.0, "high": 3.0}]}
    )
    assert "no values in common" in compatibility_problem(SPACE, far)
    assert compatibility_problem(SPACE, SPACE) is None


def test_sources_need_enough_completed_trials() -> None:
    few = source("a", [(1e-3, 2, "adam", 0.5)])
    many = source("b", [(1e-3, 2, "adam", 0.5)] * 5)
    decisions = choose_sources(SPACE, [few, many], min_completed=5)
    assert [d.used for d in decisions] == [False, True]
    assert "only 1 completed" in decisions[0].reason


def test_winners_are_top_k_in_the_encoded_space_with_categorical_subsets() -> None:
    a = source("a", [(1e-2, 2, "adam", 0.1), (1e-3, 3, "sgd", 0.2), (0.5, 1, "lion", 9.0)])
    b = source("b", [(2e-2, 2, "adam", 0.3), (5e-3, 2, "adam", 0.4), (1e-4, 4, "lion", 7.0)])
    w = collect_winners(SPACE, [a, b], top_k=2, make_encoder=SpaceEncoder)
    assert w.z.shape == (4, 2)
    enc = SpaceEncoder(SPACE)
    assert w.z[0, 0] == pytest.approx(enc.encode({"lr": 1e-2, "layers": 2, "opt": "adam"})[0])
    box = fit_region(w, "box").region
    assert box.categorical_subsets == {"opt": ["adam", "sgd"]}
    assert w.min_width[1] >= 0.25 - 1e-9  # one integer step of four


def test_map_params_clips_and_fills() -> None:
    fill = {"lr": 1e-2, "layers": 2, "opt": "adam"}
    mapped = map_params(SPACE, {"lr": 10.0, "opt": "rmsprop"}, fill)
    assert mapped == {"lr": 1.0, "layers": 2, "opt": "adam"}
