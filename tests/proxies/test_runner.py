"""Proxies, runner, torch helper and optimisers on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from hpo_service.domain.shape import ModelShape
from hpo_service.errors import InvalidInputError, UnsupportedFeatureError
from hpo_service.proxies import PROXIES, run_proxy
from hpo_service.proxies.muon import MuonAdamW, newton_schulz
from hpo_service.proxies.runner import _data as runner_data
from hpo_service.proxies.runner import build_proxy
from hpo_service.proxies.torch_setup import ScaledSetup, infer_role
from hpo_service.scaling.config import ScaleConfig


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = {
    "mlp": {"width": 32, "depth": 2, "batch_size": 32, "tokens": 32 * 20},
    "mlp_residual": {"width": 32, "depth": 2, "batch_size": 32, "tokens": 32 * 20},
    "mlp_deep_teacher": {"width": 32, "depth": 2, "batch_size": 32, "tokens": 32 * 20},
    "mlp_chars": {"width": 32, "depth": 2, "batch_size": 32, "tokens": 32 * 20},
    "mlp_digits": {"width": 32, "depth": 2, "batch_size": 32, "tokens": 32 * 20},
    "transformer": {"width": 32, "depth": 2, "batch_size": 4 * 64, "tokens": 4 * 64 * 20},
    "transformer_moe": {
        "width": 32,
        "depth": 2,
        "batch_size": 4 * 64,
        "tokens": 4 * 64 * 20,
        "experts": 4,
        "active_experts": 2,
        "expert_width": 32,
    },
}


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_every_proxy_trains_and_reports(name: str) -> None:
    param = "moe_mup" if "moe" in name else "completep"
    scale = {"parameterization": param, "proxy": SMALL[name]}
    seen: list[int] = []

    def on_measurement(step: int, metrics: dict[str, float]) -> bool:
        seen.append(step)
        assert math.isfinite(metrics["train_loss"])
        return False

    result = run_proxy(name, {"lr": 3e-3}, scale, seed=0, on_measurement=on_measurement)
    assert not result.diverged
    assert result.metrics["steps"] == 20
    assert math.isfinite(result.metrics["val_loss"])
    assert seen[-1] == 20
    assert result.cost["tokens_per_s"] > 0
    # GPU time is charged exactly when the run used CUDA (the default where present).
    assert (result.cost["gpu_seconds"] > 0) == torch.cuda.is_available()


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_every_proxy_trains_under_bf16_autocast(name: str) -> None:
    """CUDA runs use bf16 autocast; CPU autocast gives the same mixed dtypes without a GPU.

    Mixed dtypes broke the MoE proxy on an H100 (bf16 expert outputs added into a float32
    buffer) and made the RMS gains fall off the fused kernel with a warning; both fail here.
    """
    param = "moe_mup" if "moe" in name else "completep"
    config = ScaleConfig.model_validate({"parameterization": param, "proxy": SMALL[name]})
    setup = ScaledSetup(config, config.proxy, {"lr": 3e-3})
    torch.manual_seed(0)
    model = build_proxy(name, setup, seq_len=16)
    spec = PROXIES[name]
    source, per_step = runner_data(spec, config.proxy, 16)
    x, y = source.batches(per_step, 0)()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1)
    )
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_same_seed_same_result_and_early_stop() -> None:
    scale = {"parameterization": "mup", "proxy": SMALL["mlp"]}
    a = run_proxy("mlp", {"lr": 1e-2}, scale, seed=3)
    b = run_proxy("mlp", {"lr": 1e-2}, scale, seed=3)
    assert a.metrics == b.metrics
    stopped = run_proxy(
        "mlp",
        {"lr": 1e-2},
        scale,
        seed=3,
        measure_every=5,
        on_measurement=lambda step, _m: step >= 10,
    )
    assert stopped.stopped_early
    assert stopped.metrics["steps"] == 10


def test_divergence_is_reported_without_objective() -> None:
    scale = {"parameterization": "sp", "proxy": SMALL["mlp"]}
    r = run_proxy("mlp", {"lr": 1e4}, scale, seed=0)
    assert r.diverged
    assert "val_loss" not in r.metrics


def test_sharpness_metric() -> None:
    scale = {"parameterization": "mup", "proxy": SMALL["transformer"]}
    r = run_proxy("transformer", {"lr": 1e-3}, scale, seed=0, sharpness=True, max_steps=5)
    assert r.metrics["top_hessian_eig"] > 0


def test_unknown_proxy_and_sophia() -> None:
    with pytest.raises(InvalidInputError):
        run_proxy("resnet", {}, None, seed=0)
    with pytest.raises(UnsupportedFeatureError):
        run_proxy(
            "mlp",
            {"lr": 1e-3},
            {"parameterization": "mup", "optimizer": "sophia", "proxy": SMALL["mlp"]},
            seed=0,
        )


def _setup(
    param: str,
    width: int,
    depth: int = 2,
    base_width: int = 32,
    values: dict[str, float] | None = None,
    optimizer: str = "adamw",
) -> ScaledSetup:
    config = ScaleConfig(
        parameterization=param,
        optimizer=optimizer,
        proxy=ModelShape(width=width, depth=depth),
        base=ModelShape(width=base_width, depth=2),
    )
    return ScaledSetup(config, config.proxy, values or {"lr": 1e-2})


def test_param_groups_apply_the_rules() -> None:
    setup = _setup("completep", width=128, depth=8, values={"lr": 1e-2, "wd": 0.1})
    model = build_proxy("mlp_residual", setup)
    groups = {g["role"]: g for g in setup.param_groups(model)}
    assert groups["hidden.mlp_in"]["lr"] == pytest.approx(1e-2 / 4)
    assert groups["hidden.mlp_in"]["weight_decay"] == pytest.approx(0.4)
    assert groups["embedding"]["lr"] == pytest.approx(1e-2)
    assert groups["norm"]["lr"] == pytest.approx(1e-2)
    assert groups["hidden.mlp_in"]["eps"] == pytest.approx(1e-8 / 16)
    assert setup.residual_multiplier == pytest.approx(0.25)
    assert setup.readout_multiplier == pytest.approx(0.25)
    # µP hidden init: std × m_N^-½ from the fan-in default at the base width.
    std = float(model.ins[0].weight.detach().std())
    assert std == pytest.approx(math.sqrt(2 / 128), rel=0.1)


def test_lr_depth_multipliers_interpolate() -> None:
    values = {"lr": 1e-2, "lr_depth.0": 1.0, "lr_depth.1": 3.0}
    setup = _setup("completep", width=32, depth=3, values=values)
    model = build_proxy("mlp_residual", setup)
    lrs = {(g["role"], g["names"][0]): g["lr"] for g in setup.param_groups(model)}
    assert lrs[("hidden.mlp_in", "ins.0.weight")] == pytest.approx(1e-2)
    assert lrs[("hidden.mlp_in", "ins.1.weight")] == pytest.approx(2e-2)
    assert lrs[("hidden.mlp_in", "ins.2.weight")] == pytest.approx(3e-2)


def test_newton_schulz_is_nearly_orthogonal() -> None:
    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    x = newton_schulz(g)
    s = torch.linalg.svdvals(x)
    assert float(s.min()) > 0.4
    assert float(s.max()) < 1.6


def test_muon_groups_and_step() -> None:
    setup = _setup("mup", width=64, values={"lr": 1e-3, "lr.hidden": 0.02}, optimizer="muon")
    model = build_proxy("transformer", setup, seq_len=16)
    opt = setup.optimizer(model)
    assert isinstance(opt, MuonAdamW)
    flags = {g["role"]: g["use_muon"] for g in opt.param_groups}
    assert flags["hidden.attn_qkv"]
    assert flags["hidden.mlp_out"]
    assert not flags["embedding"]
    assert not flags["readout"]
    assert not flags["norm"]
    lrs = {g["role"]: g["lr"] for g in opt.param_groups}
    assert lrs["hidden.attn_qkv"] == pytest.approx(0.02)  # no width factor under Muon
    x = torch.randint(0, 128, (2, 16))
    before = model.blocks[0].qkv.weight.detach().clone()
    loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    opt.step()
    delta = model.blocks[0].qkv.weight.detach() - before
    # Update = lr · NS5(momentum) · √max(1, 3): its spectral norm is about lr·√3.
    top = float(torch.linalg.matrix_norm(delta, ord=2))
    assert 0.02 * math.sqrt(3) * 0.3 < top < 0.02 * math.sqrt(3) * 1.7


def test_infer_role() -> None:
    assert infer_role("wte.weight", torch.zeros(3, 3)) == "embedding"
    assert infer_role("lm_head.weight", torch.zeros(3, 3)) == "readout"
    assert infer_role("h.0.attn.weight", torch.zeros(3, 3)) == "hidden"
    assert infer_role("h.0.attn.bias", torch.zeros(3)) == "bias"
    assert infer_role("h.0.ln.weight", torch.zeros(3)) == "norm"


def test_completep_transformer_at_8x_depth() -> None:
    """CompleteP (α=1) in the built transformer, against Table 1 and nanoGPT-mup's code.

    At 8× the base depth: every residual branch ×⅛; block matrices, norms and QK-norms keep
    their LR (m_L^(α−1) = 1) and get ε/8 (m_L^−α), since their gradients carry the ⅛;
    embeddings, readout and final norm keep LR and ε; branch output layers keep their init
    (no depth factor). The unscaled residual (µP without a depth rule) changes nothing.
    """
    values = {"lr": 1e-2, "eps": 1e-8}
    deep = _setup("completep", width=32, depth=16, values=values)
    model = build_proxy("transformer", deep, seq_len=16)
    assert [b.res for b in model.blocks] == pytest.approx([1 / 8] * 16)
    groups = {g["role"]: g for g in deep.param_groups(model)}
    for role, g in groups.items():
        assert g["lr"] == pytest.approx(1e-2), role
        in_block = role.split(".")[0] in ("hidden", "norm", "qk_norm")
        assert g["eps"] == pytest.approx(1e-8 / 8 if in_block else 1e-8), role
    assert {"embedding", "embedding.pos", "readout", "final_norm"} <= set(groups)
    shallow = build_proxy(
        "transformer", _setup("completep", width=32, depth=2, values=values), seq_len=16
    )
    for name in ("proj", "fc_out", "fc_in"):
        a = torch.cat([getattr(b, name).weight.detach().flatten() for b in model.blocks])
        b = getattr(shallow.blocks[0], name).weight.detach()
        assert float(a.std()) == pytest.approx(float(b.std()), rel=0.1), name
    unscaled = _setup("mup", width=32, depth=16, values=values)
    plain = build_proxy("transformer", unscaled, seq_len=16)
    assert [b.res for b in plain.blocks] == pytest.approx([1.0] * 16)
    assert all(g["eps"] == pytest.approx(1e-8) for g in unscaled.param_groups(plain))
