"""Coordinate check: does the size of each layer's activation update stay flat in width?

The standard µP sanity test (TP5 §D, ``mup/coord_check.py``): train copies of a model at
several widths for a few steps on one fixed batch and record, for every layer, the mean
absolute change of its output on that batch, |h_t − h_0|. Under µP the change is Θ(1) in
width (the log-log slope is near 0); under SP it grows with width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpo_service.proxies.models import Dense

__all__ = ["activation_update_sizes", "coord_check", "loglog_slopes"]

Builder = Callable[[int, int], tuple[nn.Module, torch.optim.Optimizer]]
"""(width, seed) → a fresh model and its optimiser."""


def _outputs(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    captured: dict[str, Tensor] = {}
    handles = [
        m.register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach().clone())
        )
        for name, m in model.named_modules()
        if isinstance(m, Dense)
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return captured


def activation_update_sizes(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[Tensor, Tensor], steps: int
) -> dict[str, float]:
    """Mean |h_t − h_0| per ``Dense`` layer after ``steps`` steps on the fixed ``batch``.

    Args:
        model: maps inputs to logits (batch × classes, or batch × seq × vocab).
        optimizer: its optimiser.
        batch: inputs and integer targets, reused at every step.
        steps: optimiser steps.
    """
    x, y = batch
    before = _outputs(model, x)
    for _ in range(steps):
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    after = _outputs(model, x)
    return {k: float((after[k] - before[k]).abs().mean()) for k in before}


def loglog_slopes(widths: Sequence[int], sizes: Sequence[dict[str, float]]) -> dict[str, float]:
    """Least-squares slope of log(size) against log(width), per layer."""
    lw = np.log(np.asarray(widths, dtype=np.float64))
    out: dict[str, float] = {}
    for name in sizes[0]:
        ls = np.log([max(s[name], 1e-30) for s in sizes])
        out[name] = float(np.polyfit(lw, ls, 1)[0])
    return out


def coord_check(
    build: Builder,
    batch: tuple[Tensor, Tensor],
    widths: Sequence[int],
    *,
    steps: int = 3,
    seeds: Sequence[int] = (0, 1, 2),
) -> dict[str, float]:
    """Slopes of the per-layer update size over ``widths``, each size averaged over seeds."""
    per_width: list[dict[str, float]] = []
    for w in widths:
        runs = []
        for seed in seeds:
            model, optimizer = build(w, seed)
            runs.append(activation_update_sizes(model, optimizer, batch, steps))
        per_width.append(
            {
                k: math.exp(float(np.mean([math.log(max(r[k], 1e-30)) for r in runs])))
                for k in runs[0]
            }
        )
    return loglog_slopes(widths, per_width)
