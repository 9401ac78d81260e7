"""Ladder diagnostics on synthetic families with known drift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpo_service.scaling.ladder import LadderStudy, LadderTrial, ladder_diagnostics


def _family(
    exponent: float, *, base_is_proxy: bool, widths=(64, 128, 256, 512), n=24, seed=0, param="mup"
):
    """Studies whose true hidden-LR optimum is 1e-2·(64/w)·(w/64)^exponent (absolute)."""
    rng = np.random.default_rng(seed)
    studies = []
    for w in widths:
        absolute = 1e-2 * (64 / w) * (w / 64) ** exponent
        # The value a study stores is the base value: absolute at its own proxy when
        # base = proxy, else the µP base value at width 64.
        best = absolute if base_is_proxy else absolute * (w / 64)
        trials = []
        for _ in range(n):
            lr = best * 2.0 ** rng.uniform(-3, 3)
            loss = (math.log2(lr / best)) ** 2 + rng.normal(0, 0.05)
            trials.append(LadderTrial({"lr.hidden": lr, "beta1": 0.9, "dropout": 0.1}, loss))
        scale = {"parameterization": param, "proxy": {"width": w}}
        if not base_is_proxy:
            scale["base"] = {"width": 64}
        studies.append(LadderStudy(f"s{w}", scale, trials))
    return studies


@pytest.mark.parametrize("base_is_proxy", [True, False])
def test_transfers_when_rules_explain_the_drift(base_is_proxy):
    report = ladder_diagnostics(_family(0.0, base_is_proxy=base_is_proxy), n_boot=100)
    lr = next(p for p in report.parameters if p.param == "lr.hidden")
    assert report.axis == "width"
    assert lr.verdict == "transfers", lr
    assert abs(lr.drift_exponent) < 0.1


def test_drift_detected_and_trend_extrapolated():
    report = ladder_diagnostics(
        _family(-0.5, base_is_proxy=True), target={"width": 4096}, n_boot=100
    )
    lr = next(p for p in report.parameters if p.param == "lr.hidden")
    assert lr.verdict == "drifts"
    assert lr.drift_exponent == pytest.approx(-0.5, abs=0.15)
    assert lr.ci[0] < lr.drift_exponent < lr.ci[1]
    assert lr.trend is not None
    # The trend predicts a smaller LR at the target than the plain µP rule does.
    assert lr.trend.trend_value < lr.trend.rule_value
    assert "trend" in lr.trend.note


def test_insufficient_data():
    report = ladder_diagnostics(_family(0.0, base_is_proxy=True, widths=(64,)), n_boot=100)
    assert all(p.verdict == "insufficient-data" for p in report.parameters)
    report = ladder_diagnostics(_family(0.0, base_is_proxy=True, n=3), n_boot=100)
    assert all(p.verdict == "insufficient-data" for p in report.parameters)
    assert ladder_diagnostics([]).parameters == []


def test_maximize_goal_and_json():
    studies = _family(0.0, base_is_proxy=True)
    flipped = [
        LadderStudy(
            s.study_id, s.scale, [LadderTrial(t.params, -t.value) for t in s.trials], "maximize"
        )
        for s in studies
    ]
    body = ladder_diagnostics(flipped, n_boot=100).to_json()
    lr = next(p for p in body["parameters"] if p["param"] == "lr.hidden")
    assert lr["verdict"] == "transfers"
    assert set(body) == {"axis", "reference", "studies", "parameters", "warnings"}


def _lr_points(report):
    return next(p for p in report.parameters if p.param == "lr.hidden")


def test_a_study_that_pins_the_value_does_not_count():
    """A per-module study keeps the global LR pinned: it says nothing about its optimum."""
    studies = _family(0.0, base_is_proxy=True)
    rng = np.random.default_rng(3)
    pinned = [
        LadderTrial({"lr.hidden": 1.0, "wd": w}, (math.log10(w) + 2) ** 2 + rng.normal(0, 0.05))
        for w in 10.0 ** rng.uniform(-4, 0, 12)
    ]
    studies.append(
        LadderStudy("pinned", {"parameterization": "mup", "proxy": {"width": 1024}}, pinned)
    )
    lr = _lr_points(ladder_diagnostics(studies, n_boot=100))
    assert "pinned" not in {p.study_id for p in lr.points}
    assert lr.verdict == "transfers", lr


def test_a_one_parameter_sweep_outweighs_a_search_at_the_same_shape():
    """Where a shape has a clean LR sweep, a study moving other values too is set aside."""
    studies = _family(-0.5, base_is_proxy=True, n=14)
    rng = np.random.default_rng(4)
    # A global search at the smallest shape whose LR estimate is off by two octaves, as a
    # fit through five co-varying values can be at a small budget.
    search = [
        LadderTrial(
            {"lr.hidden": lr, "wd": wd},
            math.log2(lr / 4e-2) ** 2 + math.log10(wd / 1e-2) ** 2 + rng.normal(0, 0.05),
        )
        for lr, wd in zip(
            1e-2 * 2.0 ** rng.uniform(-3, 3, 40), 10.0 ** rng.uniform(-4, 0, 40), strict=True
        )
    ]
    studies.append(
        LadderStudy("search", {"parameterization": "mup", "proxy": {"width": 64}}, search)
    )
    lr = _lr_points(ladder_diagnostics(studies, n_boot=100))
    assert "search" not in {p.study_id for p in lr.points}
    assert lr.drift_exponent == pytest.approx(-0.5, abs=0.15)
