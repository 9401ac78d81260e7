"""Muon for hidden matrices with AdamW for everything else, and Lion, as torch optimisers.

Muon (Keller Jordan's recipe, research §6): momentum 0.95 with Nesterov, the update
orthogonalised by five Newton–Schulz steps with coefficients (3.4445, −4.7750, 2.0315) and
scaled by √max(1, fan_out/fan_in), so its spectral norm obeys µP's spectral condition and
the learning rate needs no width factor. Embeddings, readout, gains and biases stay on
AdamW (the groups without ``use_muon``), as the Muon authors recommend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["Lion", "MuonAdamW", "newton_schulz"]

_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: Tensor, steps: int = 5) -> Tensor:
    """Approximately orthogonalise a matrix (its singular values land in about [0.5, 1.5]).

    Args:
        g: a matrix of shape fan_out × fan_in (higher-rank tensors are flattened after the
            first dimension).
        steps: Newton–Schulz iterations.

    Returns:
        A tensor of ``g``'s shape and dtype, with roughly unit singular values.
    """
    a, b, c = _NS_COEFFS
    shape = g.shape
    x = g.reshape(shape[0], -1)
    # bf16 is what the recipe uses on GPUs; CPUs are faster and exact enough in fp32.
    x = x.to(torch.bfloat16 if x.is_cuda else torch.float32)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        poly = b * gram + c * gram @ gram
        x = a * x + poly @ x
    if transposed:
        x = x.T
    out: Tensor = x.reshape(shape).to(g.dtype)
    return out


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the groups flagged ``use_muon``, AdamW on the others.

    Group keys: ``lr``, ``weight_decay`` (PyTorch-coupled: p ← p(1 − lr·wd)), ``use_muon``;
    Muon groups also ``momentum`` and ``nesterov``; AdamW groups ``betas`` and ``eps``.
    """

    def __init__(
        self, params: Iterable[dict[str, Any]], *, momentum: float = 0.95, ns_steps: int = 5
    ) -> None:
        defaults = {
            "lr": 1e-3,
            "weight_decay": 0.0,
            "use_muon": False,
            "momentum": momentum,
            "nesterov": True,
            "betas": (0.9, 0.95),
            "eps": 1e-8,
            "ns_steps": ns_steps,
        }
        super().__init__(list(params), defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["use_muon"]:
                    self._muon(p, group)
                else:
                    self._adamw(p, group)
        return loss

    def _muon(self, p: Tensor, group: dict[str, Any]) -> None:
        assert p.grad is not None
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf: Tensor = state["momentum_buffer"]
        beta = float(group["momentum"])
        buf.lerp_(p.grad, 1 - beta)
        update = p.grad.lerp(buf, beta) if group["nesterov"] else buf
        update = newton_schulz(update, int(group["ns_steps"]))
        fan_out, fan_in = p.shape[0], p[0].numel()
        update = update * math.sqrt(max(1.0, fan_out / fan_in))
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-group["lr"])

    def _adamw(self, p: Tensor, group: dict[str, Any]) -> None:
        assert p.grad is not None
        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        b1, b2 = group["betas"]
        state["exp_avg"].lerp_(p.grad, 1 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        t = state["step"]
        denom = (state["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(group["eps"])
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - b1**t))


class Lion(torch.optim.Optimizer):
    """Lion (sign of an interpolated momentum), an Adam-like optimiser for µP purposes.

    Group keys: ``lr``, ``betas`` (β1 interpolates the update, β2 the momentum),
    ``weight_decay`` (coupled like AdamW).
    """

    def __init__(self, params: Iterable[dict[str, Any]]) -> None:
        super().__init__(list(params), {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m: Tensor = state["exp_avg"]
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
                m.lerp_(p.grad, 1 - b2)
        return loss
