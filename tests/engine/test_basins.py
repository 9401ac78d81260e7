"""Basin restarts: when a converged basin is set aside, and what the GP does afterwards."""

from __future__ import annotations

import numpy as np
import torch

from hpo_service.domain import (
    FloatParameter,
    Objective,
    SearchSpace,
    StudyConfig,
    Trial,
    TrialState,
)
from hpo_service.engine.basins import (
    BasinOptions,
    find_basins,
    inside_basins,
    outside_basins,
)
from hpo_service.engine.gp import GPDesigner, GPOptions

_OPTS = BasinOptions(patience=5, tolerance=1e-3, radius=0.1)  # radius 0.14 in 2-d


def _converging(n_spread: int, n_polish: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spread-out rows, then rows polishing one point with ever smaller gains (maximise)."""
    rng = np.random.default_rng(seed)
    x = [rng.random(2) for _ in range(n_spread)]
    y = [float(-np.sum((p - 0.3) ** 2)) for p in x]
    centre = np.array([0.3, 0.3])
    for k in range(n_polish):
        x.append(centre + 1e-3 * rng.standard_normal(2))
        y.append(1.0 + 1e-6 * k)
    return np.array(x), np.array(y)


def test_a_plateau_of_patience_rows_sets_the_basin_aside() -> None:
    x, y = _converging(8, 6)
    (basin,) = find_basins(x, y, start=8, options=_OPTS)
    assert np.allclose(basin.centre, [0.3, 0.3], atol=0.01)
    assert basin.radius == 0.1 * np.sqrt(2)
    assert basin.found_at == 14
    # One row fewer: still polishing within patience, nothing set aside.
    assert find_basins(x[:-1], y[:-1], start=8, options=_OPTS) == []


def test_steady_progress_sets_nothing_aside() -> None:
    x = np.linspace(0.0, 1.0, 30)[:, None] * np.ones((1, 2))
    y = np.linspace(0.0, 1.0, 30)
    assert find_basins(x, y, start=5, options=_OPTS) == []


def test_nothing_before_the_initial_design_ends() -> None:
    x, y = _converging(8, 6)
    assert find_basins(x, y, start=20, options=_OPTS) == []


def test_basins_found_early_persist_as_the_history_grows() -> None:
    x, y = _converging(8, 6)
    rng = np.random.default_rng(1)
    more_x = np.vstack([x, rng.random((10, 2))])
    more_y = np.concatenate([y, np.full(10, 0.5)])
    early = find_basins(x, y, start=8, options=_OPTS)
    later = find_basins(more_x, more_y, start=8, options=_OPTS)
    assert len(later) >= len(early) == 1
    assert np.array_equal(later[0].centre, early[0].centre)


def test_rows_inside_a_set_aside_basin_are_ignored() -> None:
    x, y = _converging(8, 6)
    # Twenty more rows inside the basin, better still: neither progress nor time for the
    # search outside it.
    more_x = np.vstack([x, np.tile([0.3, 0.3], (20, 1))])
    more_y = np.concatenate([y, np.full(20, 2.0)])
    assert len(find_basins(more_x, more_y, start=8, options=_OPTS)) == 1
    # Six rows polishing another point outside it: the next basin, there.
    rng = np.random.default_rng(4)
    far_x = np.vstack([more_x, 0.85 + 1e-3 * rng.standard_normal((6, 2))])
    far_y = np.concatenate([more_y, 0.5 + 1e-7 * np.arange(6)])
    basins = find_basins(far_x, far_y, start=8, options=_OPTS)
    assert len(basins) == 2
    assert not inside_basins(basins[1].centre[None, :], basins[:1])[0]


def test_failures_around_the_incumbent_are_no_progress() -> None:
    x, y = _converging(8, 1)
    rng = np.random.default_rng(2)
    more_x = np.vstack([x, 0.3 + 0.01 * rng.standard_normal((5, 2))])
    more_y = np.concatenate([y, np.full(5, np.nan)])
    assert len(find_basins(more_x, more_y, start=8, options=_OPTS)) == 1


def test_exploring_far_from_the_incumbent_sets_nothing_aside() -> None:
    x, y = _converging(8, 1)
    rng = np.random.default_rng(5)
    more_x = np.vstack([x, 0.7 + 0.3 * rng.random((10, 2))])
    more_y = np.concatenate([y, np.full(10, -1.0)])
    assert find_basins(more_x, more_y, start=8, options=_OPTS) == []


def test_the_penalty_pushes_the_acquisition_out_of_a_basin() -> None:
    x, y = _converging(8, 6)
    basins = find_basins(x, y, start=8, options=_OPTS)

    def flat(batch: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch.shape[0], dtype=batch.dtype)

    # Lengthscales 0.01 and 1: the basin reaches 0.02 along the first column, 2 along the
    # second (everything), and the ball (radius 0.14) covers the rest near the centre.
    penalised = outside_basins(flat, basins, np.array([0.01, 1.0]), 2.0)
    points = torch.tensor(
        [[[0.3, 0.3]], [[0.35, 0.3]], [[0.9, 0.9]], [[0.5, 0.95]], [[0.3, 0.95]]],
        dtype=torch.float64,
    )
    values = penalised(points)
    assert values[0] < values[1] < 0.0
    assert values[2] == 0.0
    assert values[3] == 0.0
    assert values[4] < 0.0  # far from the centre, but along the long lengthscale
    assert outside_basins(flat, [], np.ones(2), 2.0) is flat


def _bowl(x: np.ndarray) -> float:
    """Minimise: one smooth basin at 0.25, so a plain GP has every reason to stay there."""
    return float(np.sum((x - 0.25) ** 2))


def _converged_history() -> list[Trial]:
    """Sixteen spread trials, then twenty polishing the basin with negligible gains."""
    rng = np.random.default_rng(3)
    points = [rng.random(2) for _ in range(16)]
    points += [np.array([0.25, 0.25]) + 0.002 * rng.standard_normal(2) for _ in range(20)]
    return [
        Trial(
            id=str(i),
            study_id="basins",
            number=i,
            params={"a": float(p[0]), "b": float(p[1])},
            state=TrialState.COMPLETED,
            result={"y": _bowl(p)},
        )
        for i, p in enumerate(points)
    ]


def _incumbent() -> np.ndarray:
    best = min(_converged_history(), key=lambda t: float((t.result or {})["y"]))
    return np.array([float(best.params["a"]), float(best.params["b"])])


def _suggest(options: GPOptions) -> tuple[np.ndarray, dict[str, object]]:
    space = SearchSpace(parameters=[FloatParameter(name=n, low=0.0, high=1.0) for n in ("a", "b")])
    config = StudyConfig(space=space, objective=Objective(metric="y"), algorithm="gp", seed=0)
    designer = GPDesigner(config, 0, options)
    designer.update(_converged_history(), [])
    (s,) = designer.suggest(1)
    return np.array([float(s.params["a"]), float(s.params["b"])]), s.metadata


def test_the_gp_leaves_a_converged_basin_and_keeps_polishing_without_restarts() -> None:
    radius = BasinOptions().radius * np.sqrt(2)
    x, meta = _suggest(GPOptions(cache=None, basins=BasinOptions()))
    assert meta["basins_set_aside"] == 1
    assert np.linalg.norm(x - _incumbent()) >= radius
    x_plain, meta_plain = _suggest(GPOptions(cache=None, basins=None))
    assert "basins_set_aside" not in meta_plain
    assert np.linalg.norm(x_plain - _incumbent()) < radius
