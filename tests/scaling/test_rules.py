"""Every rule against hand-computed values from research/scaling-rules.md."""

from __future__ import annotations

import math

import pytest

from hpo_service.errors import InvalidInputError
from hpo_service.scaling import extrapolate, validate_scale
from hpo_service.scaling.extrapolate import interpolate_depth
from hpo_service.scaling.rules import PARAMETERIZATIONS, build_table


def _x(params, param, proxy, target, **kw):
    scale = {"parameterization": param, "proxy": proxy, **kw}
    return extrapolate(params, scale, target)


def _rule(result, name):
    return next(r for r in result.rules if r.param == name)


W = {"width": 256, "depth": 4, "batch_size": 64, "tokens": 64 * 10_000}


def test_mup_hidden_adam_lr_at_4x_width_is_quarter():
    r = _x({"lr.hidden": 1.0, "lr.embedding": 1.0, "lr.readout": 1.0}, "mup", W, {"width": 1024})
    assert r.params["lr.hidden"] == pytest.approx(0.25)
    assert r.params["lr.embedding"] == pytest.approx(1.0)
    assert r.params["lr.readout"] == pytest.approx(1.0)  # T8 flavour
    assert r.multipliers.width == 4.0


def test_mup_readout_flavours():
    p = {
        "lr.readout": 1.0,
        "init_std.readout": 1.0,
        "init_var.readout": 1.0,
        "mult.readout": 2.0,
        "wd.readout": 0.1,
    }
    t8 = _x(p, "mup", W, {"width": 1024}, readout="multiplier")
    assert t8.params["mult.readout"] == pytest.approx(0.5)  # α_out / m_N
    assert t8.params["init_std.readout"] == pytest.approx(1.0)
    assert t8.params["wd.readout"] == pytest.approx(0.1)
    t3 = _x(p, "mup", W, {"width": 1024}, readout="init")
    assert t3.params["lr.readout"] == pytest.approx(0.25)
    assert t3.params["init_var.readout"] == pytest.approx(1 / 16)  # × m_N⁻²
    assert t3.params["init_std.readout"] == pytest.approx(0.25)  # √ of the variance factor
    assert t3.params["mult.readout"] == pytest.approx(2.0)
    assert t3.params["wd.readout"] == pytest.approx(0.4)


def test_mup_hidden_init_wd_eps():
    p = {"init_std.hidden": 0.02, "init_var.hidden": 4e-4, "wd.hidden": 0.1, "eps.hidden": 1e-8}
    r = _x(p, "mup", W, {"width": 1024})
    assert r.params["init_std.hidden"] == pytest.approx(0.01)
    assert r.params["init_var.hidden"] == pytest.approx(1e-4)
    assert r.params["wd.hidden"] == pytest.approx(0.4)
    assert r.params["eps.hidden"] == pytest.approx(2.5e-9)


def test_sp_keeps_everything_and_warns():
    r = _x({"lr": 0.01, "init_std.hidden": 0.1}, "sp", W, {"width": 2048})
    assert all(v == pytest.approx(0.01) for k, v in r.params.items() if k.startswith("lr."))
    # SP here is PyTorch's fan-in init: the absolute std follows 1/√fan_in.
    assert r.params["init_std.hidden"] == pytest.approx(0.1 / math.sqrt(8))
    assert any("sp has no width" in w for w in r.warnings)


def test_completep_residual_multiplier_at_4x_depth_is_quarter():
    r = _x(
        {"residual_mult": 1.0, "lr.hidden": 1.0, "lr.norm": 1.0, "eps.hidden": 1.0},
        "completep",
        W,
        {"depth": 16},
    )
    assert r.params["residual_mult"] == pytest.approx(0.25)
    assert r.params["lr.hidden"] == pytest.approx(1.0)  # m_L^(α−1) = 1 at α = 1
    assert r.params["lr.norm"] == pytest.approx(1.0)
    assert r.params["eps.hidden"] == pytest.approx(0.25)  # m_L^−α


def test_depth_mup_half_exponents():
    r = _x(
        {"residual_mult": 1.0, "lr.hidden": 1.0, "lr.bias": 1.0, "eps.hidden": 1.0},
        "depth_mup",
        W,
        {"depth": 16, "width": 512},
    )
    assert r.params["residual_mult"] == pytest.approx(0.5)
    assert r.params["lr.hidden"] == pytest.approx(0.5 * 0.5)  # m_N⁻¹ · m_L^−½
    assert r.params["lr.bias"] == pytest.approx(0.5)
    assert r.params["eps.hidden"] == pytest.approx(0.5 * 0.5)


def test_implied_residual_multiplier_is_listed():
    r = _x({"lr.hidden": 1.0}, "completep", W, {"depth": 8})
    assert _rule(r, "residual_mult").target_value == pytest.approx(0.5)
    assert "residual_mult" not in r.params


def test_completedp_batch_4x_same_tokens():
    p = {
        "lr.hidden": 1.0,
        "lr.embedding": 1.0,
        "wd.hidden": 0.1,
        "wd.embedding": 0.1,
        "beta1": 0.9,
        "beta2": 0.99,
        "eps.hidden": 1e-8,
    }
    r = _x(p, "completedp", W, {"batch_size": 256})
    assert r.params["lr.hidden"] == pytest.approx(2.0)
    assert r.params["lr.embedding"] == pytest.approx(2.0)
    assert r.params["wd.hidden"] == pytest.approx(0.2)
    assert r.params["wd.embedding"] == pytest.approx(0.2)
    assert 1 - r.params["beta2"] == pytest.approx(0.04)  # (1−β2) × 4
    assert 1 - r.params["beta1"] == pytest.approx(0.4)
    assert r.params["eps.hidden"] == pytest.approx(0.5e-8)
    assert _rule(r, "iterations").target_value == 2_500


def test_completedp_duration_4x():
    r = _x({"lr.hidden": 1.0, "beta2": 0.99}, "completedp", W, {"tokens": 4 * W["tokens"]})
    assert r.params["lr.hidden"] == pytest.approx(0.5)
    assert 1 - r.params["beta2"] == pytest.approx(0.0025)
    assert any("duration exponent" in w for w in r.warnings)


def test_completedp_embedding_eps_correction():
    r = _x({"eps.embedding": 1.0}, "completedp", W, {"width": 1024})
    assert r.params["eps.embedding"] == pytest.approx(0.25)
    r = _x({"eps.embedding": 1.0}, "completep", W, {"width": 1024})
    assert r.params["eps.embedding"] == pytest.approx(1.0)


def test_qk_norm_rules():
    r = _x({"lr.qk_norm": 1.0, "eps.qk_norm": 1.0}, "completedp", W, {"width": 1024, "depth": 16})
    assert r.params["lr.qk_norm"] == pytest.approx(1.0)
    assert r.params["eps.qk_norm"] == pytest.approx(0.25)  # m_L^−α only


def test_muon_hidden_lr_width_invariant():
    r = _x(
        {"lr.hidden": 0.02, "lr.embedding": 3e-4, "wd.hidden": 0.01},
        "mup",
        W,
        {"width": 4096},
        optimizer="muon",
    )
    assert r.params["lr.hidden"] == pytest.approx(0.02)
    assert r.params["wd.hidden"] == pytest.approx(0.01)
    assert r.params["lr.embedding"] == pytest.approx(3e-4)


def test_lion_is_adam_like_with_downgraded_evidence():
    r = _x({"lr.hidden": 1.0}, "mup", W, {"width": 512}, optimizer="lion")
    assert r.params["lr.hidden"] == pytest.approx(0.5)
    assert "[D]" in _rule(r, "lr.hidden").rule


MOE = {"width": 256, "depth": 4, "experts": 8, "active_experts": 2, "expert_width": 512}


def test_moe_router_and_expert_down():
    p = {
        "lr.router": 1.0,
        "init_std.router": 1.0,
        "lr.hidden.expert_down": 1.0,
        "init_std.hidden.expert_down": 1.0,
        "lr.hidden.expert_up": 1.0,
        "lr.expert_bias": 1.0,
    }
    # 4× width, same granularity (expert width follows), twice the experts at fixed a/E.
    r = _x(p, "moe_mup", MOE, {"width": 1024, "experts": 16, "active_experts": 4})
    assert r.target["expert_width"] == 2048
    assert r.params["lr.router"] == pytest.approx(0.25)
    assert r.params["init_std.router"] == pytest.approx(0.25)  # std n^-1
    assert r.params["lr.hidden.expert_down"] == pytest.approx(0.25)
    assert r.params["lr.hidden.expert_up"] == pytest.approx(0.25)
    assert r.params["lr.expert_bias"] == pytest.approx(1.0)
    assert not any("a/E" in w for w in r.warnings)
    # Doubling the expert width fraction: W_down LR × 1/2, std × 1/2.
    r = _x(p, "moe_mup", MOE, {"expert_width": 1024})
    assert r.params["lr.hidden.expert_down"] == pytest.approx(0.5)
    assert r.params["init_std.hidden.expert_down"] == pytest.approx(0.5)
    assert any("granularity" in w for w in r.warnings)
    r = _x(p, "moe_mup", MOE, {"experts": 16})
    assert any("a/E" in w for w in r.warnings)


def test_sub_roles_fall_back_to_parent():
    r = _x({"lr.hidden.attn_qkv": 1.0, "lr.hidden.mlp_out": 2.0}, "mup", W, {"width": 512})
    assert r.params["lr.hidden.attn_qkv"] == pytest.approx(0.5)
    assert r.params["lr.hidden.mlp_out"] == pytest.approx(1.0)


def test_bare_names_expand_and_globals_keep_names():
    r = _x(
        {"lr": 1.0, "lr.hidden": 2.0, "beta1": 0.9, "warmup_frac": 0.1, "dropout": 0.1},
        "mup",
        W,
        {"width": 512},
    )
    assert "lr" not in r.params
    assert r.params["lr.hidden"] == pytest.approx(1.0)  # own value wins over bare lr
    assert r.params["lr.embedding"] == pytest.approx(1.0)
    assert r.params["lr.readout"] == pytest.approx(1.0)
    assert r.params["beta1"] == pytest.approx(0.9)
    assert r.params["warmup_frac"] == pytest.approx(0.1)
    assert r.params["dropout"] == 0.1
    assert "unchanged" in _rule(r, "dropout").rule


def test_lr_depth_interpolation():
    assert interpolate_depth([1.0, 3.0], 3) == pytest.approx([1.0, 2.0, 3.0])
    r = _x(
        {"lr_depth.0": 1.0, "lr_depth.1": 2.0, "lr_depth.2": 2.0, "lr_depth.3": 4.0},
        "completep",
        W,
        {"depth": 7},
    )
    values = [r.params[f"lr_depth.{j}"] for j in range(7)]
    assert values == pytest.approx([1.0, 1.5, 2.0, 2.0, 2.0, 3.0, 4.0])
    with pytest.raises(InvalidInputError):
        _x({"lr_depth.0": 1.0}, "completep", W, {"depth": 8})


def test_every_parameterization_identity_at_base_shape():
    p = {"lr": 0.01, "wd": 0.1, "eps": 1e-8, "init_std": 0.02, "beta1": 0.9, "beta2": 0.95}
    for param in PARAMETERIZATIONS:
        proxy = MOE if param == "moe_mup" else W
        r = _x(p, param, proxy, None)
        for rule in r.rules:
            assert rule.factor == pytest.approx(1.0), (param, rule)
        for k, v in r.params.items():
            base = p[k.split(".")[0]]
            assert v == pytest.approx(base), (param, k)


def test_response_shape_is_the_api_body():
    body = _x({"lr": 0.01}, "mup", W, {"width": 512}).to_json()
    assert set(body) == {
        "parameterization",
        "proxy",
        "target",
        "multipliers",
        "params",
        "rules",
        "warnings",
        "implied",
    }
    # µP's readout multiplier is implied (not a trial parameter) and listed for the model.
    assert body["implied"] == {"mult.readout": pytest.approx(1.0 / (512 / W["width"]))}
    assert set(body["multipliers"]) == {"width", "depth", "batch", "duration"}
    assert set(body["rules"][0]) == {"param", "proxy_value", "target_value", "factor", "rule"}


def test_errors_have_precise_locations():
    with pytest.raises(InvalidInputError) as e:
        _x({"lr.hiden": 1.0}, "mup", W, {"width": 512})
    assert e.value.errors[0].loc == ("params", "lr.hiden")
    with pytest.raises(InvalidInputError) as e:
        _x({"lr": 1.0}, "mup", {"width": 256}, {"batch_size": 64})
    assert e.value.errors[0].loc == ("body", "target", "batch_size")
    with pytest.raises(InvalidInputError) as e:
        _x({"lr": 1.0}, "mup", W, {"experts": 4})
    assert e.value.errors[0].loc == ("body", "target", "experts")
    with pytest.raises(InvalidInputError) as e:
        _x({"lr": 1.0}, "mup", W, {"widht": 4})
    assert e.value.errors[0].loc == ("body", "target", "widht")


def test_validity_warnings():
    r = _x(
        {"lr": 1.0},
        "completedp",
        {"width": 64, "depth": 2, "batch_size": 8, "tokens": 800},
        {"width": 8192, "batch_size": 128},
    )
    text = " ".join(r.warnings)
    assert "TP5 §6.1" in text
    assert "1/8×–4×" in text
    assert "exceeds 64×" in text


def test_validate_scale_errors():
    with pytest.raises(InvalidInputError) as e:
        validate_scale({"parameterization": "mupp", "proxy": {"width": 0}, "extra": 1})
    locs = {err.loc for err in e.value.errors}
    assert ("body", "scale", "parameterization") in locs
    assert ("body", "scale", "proxy", "width") in locs
    assert ("body", "scale", "extra") in locs
    with pytest.raises(InvalidInputError) as e:
        validate_scale({"parameterization": "completep", "proxy": {"width": 64}})
    assert e.value.errors[0].loc == ("body", "scale", "proxy", "depth")
    with pytest.raises(InvalidInputError) as e:
        validate_scale({"parameterization": "mup", "proxy": {"width": 64}, "readout": "x"})
    assert e.value.errors[0].loc == ("body", "scale", "readout")
    with pytest.raises(InvalidInputError) as e:
        validate_scale(
            {"parameterization": "completep", "proxy": {"width": 64, "depth": 2}},
            param_names=["lr.hidden", "lr.hiden", "lr_depth.2"],
        )
    assert {err.loc for err in e.value.errors} == {
        ("body", "space", "parameters", "lr.hiden"),
        ("body", "space", "parameters", "lr_depth.2"),
    }
    cfg = validate_scale({"parameterization": "mup", "proxy": {"width": 64}})
    assert cfg is not None
    assert cfg.readout == "multiplier"
    assert cfg.optimizer == "adamw"


def test_tables_carry_sources_and_confidence():
    for param in PARAMETERIZATIONS:
        for readout in ("multiplier", "init"):
            for opt in ("adamw", "muon", "lion", "sophia"):
                for rule in build_table(param, readout, opt).values():
                    assert rule.sources
                    assert rule.confidence in ("V", "S", "D", "U")


def test_the_domain_vocabulary_is_the_rule_tables() -> None:
    from typing import get_args

    from hpo_service.domain.scale import OptimizerName, Parameterization, Readout
    from hpo_service.scaling.rules import OPTIMIZERS, PARAMETERIZATIONS, READOUTS

    assert get_args(Parameterization) == PARAMETERIZATIONS
    assert get_args(Readout) == READOUTS
    assert get_args(OptimizerName) == OPTIMIZERS
