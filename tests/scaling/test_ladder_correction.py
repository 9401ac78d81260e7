"""Ladder-corrected extrapolation: fitted drifts on top of the rules, verdicts per role."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpo_service.domain.shape import ModelShape
from hpo_service.scaling import extrapolate
from hpo_service.scaling.ladder import LadderStudy, LadderTrial, ladder_diagnostics
from hpo_service.scaling.ladder_correction import extrapolate_with_ladder
from hpo_service.scaling.ladder_plan import ladder_plan

STEPS = {"batch_size": 256, "tokens": 256 * 300}


def _scale(width: int, depth: int, base: tuple[int, int] | None = None) -> dict:
    scale: dict = {
        "parameterization": "completep",
        "proxy": {"width": width, "depth": depth, **STEPS},
    }
    if base is not None:
        scale["base"] = {"width": base[0], "depth": base[1], **STEPS}
    return scale


def _sweep(
    name: str, optimum: float, rng: np.random.Generator, n: int = 30, fixed: dict | None = None
) -> list[LadderTrial]:
    """Trials around ``optimum`` (log2 spread ±2) with a parabolic loss plus noise."""
    trials = []
    for _ in range(n):
        value = optimum * 2.0 ** rng.uniform(-2, 2)
        loss = 2.3 + 0.05 * math.log2(value / optimum) ** 2 + rng.normal(0, 0.002)
        trials.append(LadderTrial({name: value, **(fixed or {})}, loss))
    return trials


def _depth_family(drift: float, seed: int = 0) -> list[LadderStudy]:
    """The global LR at w32 depths 2, 4, 8; its optimum moves as depth^drift (absolute)."""
    rng = np.random.default_rng(seed)
    return [
        LadderStudy(f"d{d}", _scale(32, d), _sweep("lr", 0.04 * (d / 2) ** drift, rng))
        for d in (2, 4, 8)
    ]


def test_global_lr_drift_over_depth_is_carried_to_the_target() -> None:
    studies = _depth_family(0.35)
    report = ladder_diagnostics(studies, n_boot=100)
    lr = next(p for p in report.parameters if p.param == "lr")
    assert lr.verdict == "drifts"
    assert lr.exponents["depth"] == pytest.approx(0.35, abs=0.1)
    target = {"width": 256, "depth": 8}
    plain = extrapolate({"lr": 0.04}, _scale(32, 2), target)
    corrected = extrapolate_with_ladder({"lr": 0.04}, _scale(32, 2), target, report)
    ratio = corrected.params["lr.hidden"] / plain.params["lr.hidden"]
    assert math.log2(ratio) == pytest.approx(0.35 * 2, abs=0.2)  # depth 2 -> 8: two octaves
    rule = next(r for r in corrected.rules if r.param == "lr.hidden")
    assert "ladder: fitted drift of 'lr'" in rule.rule
    assert rule.proxy_value == 0.04
    assert rule.factor == pytest.approx(corrected.params["lr.hidden"] / 0.04)


def test_no_drift_leaves_the_rules_alone() -> None:
    report = ladder_diagnostics(_depth_family(0.0), n_boot=100)
    lr = next(p for p in report.parameters if p.param == "lr")
    assert lr.verdict == "transfers"
    target = {"width": 256, "depth": 8}
    plain = extrapolate({"lr": 0.04}, _scale(32, 2), target)
    corrected = extrapolate_with_ladder({"lr": 0.04}, _scale(32, 2), target, report)
    assert corrected.params["lr.hidden"] == pytest.approx(plain.params["lr.hidden"], rel=0.15)


def _width_family(rng: np.random.Generator) -> list[LadderStudy]:
    """A per-module study's rungs at widths 32/64/128 (base = each proxy, depth 2).

    ``lr.embedding``'s optimum falls with width (a finite-width effect of a narrow base);
    ``lr.readout``'s follows the rules exactly (×1 per width under the multiplier flavour).
    """
    studies = []
    for w in (32, 64, 128):
        emb = 0.04 * 2**4.5 * (32 / w) ** 1.0
        trials = []
        for _ in range(40):  # a per-module search moves both at once
            e, r = rng.uniform(-2, 2, 2)
            loss = 2.3 + 0.05 * (e**2 + r**2) + rng.normal(0, 0.002)
            trials.append(
                LadderTrial({"lr.embedding": emb * 2**e, "lr.readout": 0.08 * 2**r}, loss)
            )
        studies.append(LadderStudy(f"w{w}", _scale(w, 2), trials))
    return studies


def test_a_role_that_drifts_is_kept_at_its_global_value_and_one_that_transfers_is_not() -> None:
    rng = np.random.default_rng(3)
    report = ladder_diagnostics(_width_family(rng), n_boot=100)
    verdicts = {p.param: p.verdict for p in report.parameters}
    assert verdicts["lr.embedding"] == "drifts"
    assert verdicts["lr.readout"] == "transfers"
    trial = {"lr.embedding": 0.04 * 2**4.5, "lr.readout": 0.08, "lr": 0.04}
    parent = {"lr": 0.05}
    target = {"width": 256, "depth": 2}
    out = extrapolate_with_ladder(trial, _scale(32, 2), target, report, parent_params=parent)
    # lr.embedding's rule is ×1 in width: kept at the parent's global LR.
    assert out.params["lr.embedding"] == pytest.approx(0.05)
    assert out.params["lr.readout"] == pytest.approx(0.08)
    rule = next(r for r in out.rules if r.param == "lr.embedding")
    assert "kept at the global value (the parent study's 'lr')" in rule.rule
    assert "drifts" in rule.rule
    assert rule.proxy_value == pytest.approx(0.04 * 2**4.5)


def test_without_a_parent_a_role_falls_back_to_the_trials_own_bare_value() -> None:
    rng = np.random.default_rng(4)
    report = ladder_diagnostics(_width_family(rng), n_boot=100)
    out = extrapolate_with_ladder(
        {"lr.embedding": 0.7, "lr": 0.03}, _scale(32, 2), {"width": 128}, report
    )
    assert out.params["lr.embedding"] == pytest.approx(0.03)
    assert "this trial's 'lr'" in next(r.rule for r in out.rules if r.param == "lr.embedding")


def test_a_role_off_the_ladder_is_kept_global_and_says_so() -> None:
    report = ladder_diagnostics(_depth_family(0.0), n_boot=50)
    out = extrapolate_with_ladder(
        {"lr.hidden.attn_qkv": 0.01, "lr": 0.04},
        _scale(32, 2),
        {"width": 64},
        report,
        parent_params={"lr": 0.04},
    )
    rule = next(r for r in out.rules if r.param == "lr.hidden.attn_qkv")
    assert "not on the ladder" in rule.rule
    plain = extrapolate({"lr.hidden.attn_qkv": 0.04}, _scale(32, 2), {"width": 64})
    assert out.params["lr.hidden.attn_qkv"] == pytest.approx(
        plain.params["lr.hidden.attn_qkv"], rel=0.15
    )


def test_payoff_pilot_verdicts_embedding_drifts_global_lr_holds() -> None:
    """Regression test of the verdicts on the pilot's measured optima (CompleteP, d2).

    Per-role LR sweeps of the built-in transformer, base w32 d2 at every width (300 steps,
    256 tokens/step; shared/design/research/payoff-pilot.md): the global LR optimum moves
    < 0.1 octave from w32 to w256, the embedding multiplier falls from 2^4.55 to 2^1.67,
    the readout and hidden multipliers move by at most about half an octave.
    """
    rng = np.random.default_rng(11)
    table = {  # width: (global log2 LR, embedding, readout, hidden log2 multipliers)
        32: (-4.58, 4.55, 0.7, -0.69),
        64: (-4.58, 3.75, 0.7, -0.38),
        128: (-4.54, 3.8, 1.0, -0.14),
        256: (-4.52, 1.67, 1.25, -0.17),
    }
    studies = []
    for w, (glob, emb, readout, hidden) in table.items():
        scale = _scale(w, 2, base=(32, 2))
        trials = _sweep("lr", 2.0**glob, rng)
        for name, mult in (("lr.embedding", emb), ("lr.readout", readout), ("lr.hidden", hidden)):
            trials += _sweep(name, 2.0 ** (glob + mult), rng)
        studies.append(LadderStudy(f"w{w}", scale, trials))
    report = ladder_diagnostics(studies, n_boot=200)
    by = {p.param: p for p in report.parameters}
    assert by["lr.embedding"].verdict == "drifts"
    assert by["lr.embedding"].exponents["width"] < -0.5
    assert by["lr"].verdict == "transfers"
    for name in ("lr.readout", "lr.hidden"):
        assert abs(by[name].exponents["width"]) < abs(by["lr.embedding"].exponents["width"]) / 3


def test_ladder_plan_doubles_depth_to_the_target_and_adds_two_widths() -> None:
    plan = ladder_plan(ModelShape(width=64, depth=2), ModelShape(width=512, depth=8))
    assert [s.depth for s in plan.depth] == [2, 4, 8]
    # At twice the proxy's width: the narrowest models exaggerate the depth drift.
    assert {s.width for s in plan.depth} == {128}
    assert [s.width for s in plan.width] == [128, 256]
    assert {s.depth for s in plan.width} == {2}
    # Every depth rung is an LR grid around the proxy's best, the proxy's depth included.
    assert 0.0 in plan.lr_offsets
    assert min(plan.lr_offsets) <= -1.5
    assert plan.replicates >= 2
    odd = ladder_plan(ModelShape(width=64, depth=3), ModelShape(width=128, depth=10))
    assert [s.depth for s in odd.depth] == [3, 6, 10]
    assert {s.width for s in odd.depth} == {64}  # a quarter of the target's is below 2×
    assert [s.width for s in odd.width] == []
    same = ladder_plan(ModelShape(width=64, depth=4), ModelShape(width=64, depth=4))
    assert (same.depth, same.width) == ((), ())
    with pytest.raises(ValueError, match="width and depth"):
        ladder_plan(ModelShape(width=64), ModelShape(width=128, depth=4))


def test_two_rungs_give_no_verdict_and_no_correction() -> None:
    """Through two points any noise is a slope: the fit is shown, not applied."""
    rng = np.random.default_rng(5)
    studies = [
        LadderStudy(f"d{d}", _scale(32, d), _sweep("lr", 0.04 * (d / 2) ** -0.5, rng))
        for d in (2, 8)
    ]
    report = ladder_diagnostics(studies, n_boot=100)
    lr = next(p for p in report.parameters if p.param == "lr")
    assert lr.verdict == "insufficient-data"
    assert lr.exponents["depth"] == pytest.approx(-0.5, abs=0.15)
    assert "needs one more" in lr.note
    target = {"width": 256, "depth": 8}
    plain = extrapolate({"lr": 0.04}, _scale(32, 2), target)
    corrected = extrapolate_with_ladder({"lr": 0.04}, _scale(32, 2), target, report)
    assert corrected.params["lr.hidden"] == pytest.approx(plain.params["lr.hidden"])


def test_lr_sweeps_alone_make_the_ladder_when_they_span_shapes() -> None:
    """Depth sweeps at w64 and a global search at w32: the search adds no width axis."""
    rng = np.random.default_rng(6)
    studies = [
        LadderStudy(f"d{d}", _scale(64, d), _sweep("lr", 0.04 * (d / 2) ** -0.4, rng))
        for d in (2, 4, 8)
    ]
    # A global search at the proxy whose LR estimate is off by an octave and a half.
    search = _sweep("lr", 0.04 * 2**1.5, rng, n=40)
    search = [
        LadderTrial({**t.params, "wd": w}, t.value + 0.01 * math.log10(w / 1e-2) ** 2)
        for t, w in zip(search, 10.0 ** rng.uniform(-4, 0, len(search)), strict=True)
    ]
    studies.append(LadderStudy("global", _scale(32, 2), search))
    lr = next(p for p in ladder_diagnostics(studies, n_boot=100).parameters if p.param == "lr")
    assert set(lr.exponents) == {"depth"}
    assert lr.exponents["depth"] == pytest.approx(-0.4, abs=0.12)
    assert "global" not in {p.study_id for p in lr.points}
