"""The one entry point a worker calls to train a built-in proxy: ``run_proxy``.

``run_proxy(name, params, scale, seed=..., on_measurement=...)`` builds the named proxy at
the study's proxy shape through the scaling helper (so the trial's per-module values and
the study's parameterisation decide init, multipliers and optimiser groups), trains it for
``tokens / batch_size`` steps, reports the training loss every few steps through
``on_measurement`` (which may ask to stop early), and returns the validation loss as the
objective together with the cost. CUDA is used when present (bf16 autocast); on CPU the
default shapes are small.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpo_service.domain.shape import ModelShape
from hpo_service.domain.space import ParamValue
from hpo_service.errors import InvalidInputError
from hpo_service.proxies.data import (
    Batch,
    CharContext,
    CharCorpus,
    Digits,
    TeacherStudent,
)
from hpo_service.proxies.models import MLP, Transformer, fan_in_defaults
from hpo_service.proxies.sharpness import top_hessian_eigenvalue
from hpo_service.proxies.torch_setup import ScaledSetup
from hpo_service.scaling.config import ScaleConfig, validate_scale

__all__ = ["PROXIES", "ProxyResult", "ProxySpec", "build_proxy", "default_shape", "run_proxy"]

DEEP_TEACHER_LAYERS = 6
DEEP_TEACHER_GAIN = 2.0
"""The ``mlp_deep_teacher`` target: 6 tanh layers at gain 2 (chaotic regime)."""

MeasurementCallback = Callable[[int, dict[str, float]], bool]


@dataclass(frozen=True)
class ProxySpec:
    """A built-in proxy: what it trains on and its default shapes (CPU, CUDA)."""

    kind: str
    cpu: ModelShape
    cuda: ModelShape
    residual: bool = False
    qk_norm: bool = False
    seq_len_cpu: int = 64
    seq_len_cuda: int = 256


PROXIES: dict[str, ProxySpec] = {
    "mlp": ProxySpec(
        "teacher",
        ModelShape(width=128, depth=2, batch_size=64, tokens=64 * 300),
        ModelShape(width=1024, depth=2, batch_size=256, tokens=256 * 2000),
    ),
    "mlp_residual": ProxySpec(
        "teacher",
        ModelShape(width=128, depth=4, batch_size=64, tokens=64 * 300),
        ModelShape(width=1024, depth=8, batch_size=256, tokens=256 * 2000),
        residual=True,
    ),
    "mlp_deep_teacher": ProxySpec(
        "deep_teacher",
        ModelShape(width=64, depth=4, batch_size=64, tokens=64 * 300),
        ModelShape(width=1024, depth=8, batch_size=256, tokens=256 * 2000),
        residual=True,
    ),
    "mlp_chars": ProxySpec(
        "char_context",
        ModelShape(width=64, depth=4, batch_size=64, tokens=64 * 300),
        ModelShape(width=1024, depth=8, batch_size=256, tokens=256 * 2000),
        residual=True,
    ),
    "mlp_digits": ProxySpec(
        "digits",
        ModelShape(width=128, depth=2, batch_size=64, tokens=64 * 300),
        ModelShape(width=1024, depth=2, batch_size=128, tokens=128 * 1000),
    ),
    "transformer": ProxySpec(
        "chars",
        ModelShape(width=64, depth=2, batch_size=16 * 64, tokens=16 * 64 * 200),
        ModelShape(width=256, depth=4, batch_size=32 * 256, tokens=32 * 256 * 2000),
        qk_norm=True,
    ),
    "transformer_moe": ProxySpec(
        "chars",
        ModelShape(
            width=64,
            depth=2,
            batch_size=16 * 64,
            tokens=16 * 64 * 200,
            experts=4,
            active_experts=2,
            expert_width=128,
        ),
        ModelShape(
            width=256,
            depth=4,
            batch_size=32 * 256,
            tokens=32 * 256 * 2000,
            experts=8,
            active_experts=2,
            expert_width=512,
        ),
        qk_norm=True,
    ),
}
"""Built-in proxies by name (``hpo worker --proxy NAME``)."""


@dataclass
class ProxyResult:
    """What one proxy run produced.

    Attributes:
        metrics: ``val_loss`` (the objective; absent when the run diverged),
            ``train_loss`` (mean of the last tenth of steps), ``steps``, and
            ``top_hessian_eig`` when asked for.
        cost: ``wall_seconds``, ``gpu_seconds`` (0 on CPU), ``tokens_per_s``.
        curve: (step, training loss) at every measurement.
        val_curve: (step, validation loss) every ``validate_every`` steps, when asked:
            the same fixed windows at every point, so curves of different runs compare.
        diverged: the loss became non-finite or exploded; report the trial infeasible.
        stopped_early: ``on_measurement`` asked to stop.
    """

    metrics: dict[str, float]
    cost: dict[str, float]
    curve: list[tuple[int, float]] = field(default_factory=list)
    diverged: bool = False
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    stopped_early: bool = False


def default_shape(name: str, device: torch.device | None = None) -> ModelShape:
    """The proxy's default shape on ``device`` (CUDA when present, else CPU)."""
    spec = _spec(name)
    dev = device or _device()
    return spec.cuda if dev.type == "cuda" else spec.cpu


def _spec(name: str) -> ProxySpec:
    if name not in PROXIES:
        raise InvalidInputError.at(
            ("proxy",), f"unknown proxy {name!r}; built in: {', '.join(sorted(PROXIES))}"
        )
    return PROXIES[name]


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _config(
    name: str, scale: Mapping[str, Any] | ScaleConfig | None, device: torch.device
) -> ScaleConfig:
    if scale is None:
        return ScaleConfig(parameterization="sp", proxy=default_shape(name, device))
    if isinstance(scale, ScaleConfig):
        return scale
    raw = dict(scale)
    raw.setdefault("proxy", default_shape(name, device).axes())
    config = validate_scale(raw, loc=("scale",))
    assert config is not None
    return config


def build_proxy(name: str, setup: ScaledSetup, *, seq_len: int | None = None) -> nn.Module:
    """Build the named proxy for ``setup`` (shape and scaled hyperparameters)."""
    spec = _spec(name)
    base = setup.config.base_shape
    if spec.kind == "chars":
        seq = seq_len or spec.seq_len_cpu
        ew = base.expert_width
        setup.defaults = {
            **fan_in_defaults(base.width, ffn=4 * base.width, expert_width=ew),
            **setup.defaults,
        }
        return Transformer(128, seq, setup, qk_norm=spec.qk_norm)
    d_in, classes = {"digits": (64, 10), "char_context": (CharContext().d_in, 128)}.get(
        spec.kind, (32, 10)
    )
    setup.defaults = {**fan_in_defaults(base.width, d_in=d_in), **setup.defaults}
    return MLP(d_in, classes, setup, residual=spec.residual)


def _schedule(kind: str, step: int, steps: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    frac = (step - warmup) / max(1, steps - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - frac)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def _loss(model: nn.Module, batch: Batch, device: torch.device) -> Tensor:
    x, y = (t.to(device, non_blocking=True) for t in batch)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


def run_proxy(
    name: str,
    params: Mapping[str, ParamValue],
    scale: Mapping[str, Any] | ScaleConfig | None,
    *,
    seed: int,
    on_measurement: MeasurementCallback | None = None,
    max_steps: int | None = None,
    measure_every: int | None = None,
    sharpness: bool = False,
    device: str | None = None,
    data_seed: int | None = None,
    seq_len: int | None = None,
    validate_every: int | None = None,
    validation_windows: int | None = None,
) -> ProxyResult:
    """Train a built-in proxy once and report its validation loss.

    Args:
        name: a key of ``PROXIES`` (``mlp``, ``mlp_residual``, ``mlp_chars``, ``mlp_digits``,
            ``transformer``, ``transformer_moe``).
        params: the trial's values: per-module hyperparameters (``lr.hidden``, ``lr``,
            ``init_std.readout``, ...) at the study's base shape, plus ``schedule``
            (``constant``/``cosine``/``linear``), ``warmup_frac`` and ``grad_clip``.
        scale: the study's ``scale`` object (None: SP at the default shape).
        seed: seeds the initialisation, and the data unless ``data_seed`` is given.
        on_measurement: called with (step, {"train_loss": ...}); returning True stops.
        max_steps: cap on the step count (the shape's tokens / batch_size otherwise).
        measure_every: steps between measurements (default: a tenth of the run).
        sharpness: also estimate the top Hessian eigenvalue on a fixed probe batch.
        device: ``cuda``/``cpu``; default CUDA when present.
        data_seed: seeds the batch order; fixing it gives every trial the same batches.
        seq_len: context length of the character proxies (default 64 on CPU, 256 on CUDA).
        validate_every: also record the validation loss every this many steps (``val_curve``),
            which is what a speed-up in steps is read from.
        validation_windows: windows of the final validation loss of the character proxies
            (default 256); more windows, less noise in the objective.

    Returns:
        Metrics, cost, the loss curve, and whether the run diverged or stopped early.
    """
    dev = torch.device(device) if device else _device()
    config = _config(name, scale, dev)
    spec = _spec(name)
    shape = config.proxy
    seq_len = seq_len or (spec.seq_len_cuda if dev.type == "cuda" else spec.seq_len_cpu)
    torch.manual_seed(seed)
    setup = ScaledSetup(config, shape, params)
    model = build_proxy(name, setup, seq_len=seq_len).to(dev)
    optimizer = setup.optimizer(model)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    source, per_step = _data(spec, shape, seq_len)
    draw = source.batches(per_step, seed if data_seed is None else data_seed)
    steps = shape.steps or 100
    if max_steps is not None:
        steps = min(steps, max_steps)
    every = measure_every or max(1, steps // 10)
    warmup = int(float(params.get("warmup_frac", 0.0)) * steps)
    schedule = str(params.get("schedule", "constant"))
    clip = float(params.get("grad_clip", 0.0))
    start = time.perf_counter()
    losses: list[float] = []
    curve: list[tuple[int, float]] = []
    diverged = stopped = False
    first: float | None = None
    val_curve: list[tuple[int, float]] = []
    for step in range(steps):
        factor = _schedule(schedule, step, steps, warmup)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        loss = _loss(model, draw(), dev)
        value = float(loss.detach())
        first = value if first is None else first
        if not math.isfinite(value) or value > 10.0 * first + 10.0:
            diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(value)
        if validate_every and ((step + 1) % validate_every == 0 or step + 1 == steps):
            val_curve.append((step + 1, _validate(model, source, dev)))
        if (step + 1) % every == 0 or step + 1 == steps:
            recent = sum(losses[-every:]) / len(losses[-every:])
            curve.append((step + 1, recent))
            if on_measurement is not None and on_measurement(step + 1, {"train_loss": recent}):
                stopped = True
                break
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    metrics: dict[str, float] = {"steps": float(len(losses))}
    if losses:
        tail = losses[-max(1, len(losses) // 10) :]
        metrics["train_loss"] = sum(tail) / len(tail)
    if not diverged:
        metrics["val_loss"] = _validate(model, source, dev, windows=validation_windows)
        if not math.isfinite(metrics["val_loss"]):
            diverged = True
            del metrics["val_loss"]
    if sharpness and not diverged:
        probe = source.batches(per_step, 10_000 + seed)()
        metrics["top_hessian_eig"] = top_hessian_eigenvalue(
            model, lambda: _loss(model, probe, dev), iters=10, seed=seed
        )
    tokens = len(losses) * per_step * (seq_len if spec.kind == "chars" else 1)
    cost = {
        "wall_seconds": wall,
        "gpu_seconds": wall if dev.type == "cuda" else 0.0,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
    }
    return ProxyResult(
        metrics, cost, curve, diverged=diverged, stopped_early=stopped, val_curve=val_curve
    )


def _data(
    spec: ProxySpec, shape: ModelShape, seq_len: int
) -> tuple[TeacherStudent | Digits | CharCorpus | CharContext, int]:
    batch = shape.batch_size or 64
    if spec.kind == "char_context":
        return CharContext(), batch
    if spec.kind == "deep_teacher":
        return TeacherStudent(layers=DEEP_TEACHER_LAYERS, gain=DEEP_TEACHER_GAIN), batch
    if spec.kind == "chars":
        return CharCorpus(seq_len=seq_len), max(1, batch // seq_len)
    if spec.kind == "digits":
        return Digits(), batch
    return TeacherStudent(), batch


@torch.no_grad()
def _validate(
    model: nn.Module,
    source: TeacherStudent | Digits | CharCorpus | CharContext,
    dev: torch.device,
    *,
    windows: int | None = None,
) -> float:
    model.eval()
    batch = (
        source.validation(windows)
        if windows is not None and isinstance(source, CharCorpus)
        else source.validation()
    )
    loss = float(_loss(model, batch, dev))
    model.train()
    return loss
