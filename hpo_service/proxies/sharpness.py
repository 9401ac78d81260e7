"""Top Hessian eigenvalue by power iteration on Hessian-vector products.

The Super Consistency diagnostic (Noci et al., 2024): under µP the sharpness trajectory is
the same across widths, under SP it separates. Hessian-vector products come from double
back-propagation on a fixed probe batch, so successive estimates are comparable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["top_hessian_eigenvalue"]


def top_hessian_eigenvalue(
    model: nn.Module, loss_fn: Callable[[], Tensor], *, iters: int = 10, seed: int = 0
) -> float:
    """Estimate the largest-magnitude eigenvalue of the loss Hessian.

    Args:
        model: the network; every parameter that requires grad is included.
        loss_fn: recomputes the scalar loss on the fixed probe batch.
        iters: power-iteration steps (each one Hessian-vector product).
        seed: seeds the random start vector.

    Returns:
        The Rayleigh quotient vᵀHv of the final unit vector v.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = [torch.randn(p.shape, generator=g).to(p.device) for p in params]
    eig = 0.0
    # Fused attention kernels have no double backward; the math kernel does.
    with sdpa_kernel([SDPBackend.MATH]):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True)
    for _ in range(iters):
        norm = torch.sqrt(sum((x * x).sum() for x in v))  # type: ignore[arg-type]
        v = [x / norm for x in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        eig = float(sum((a * b).sum() for a, b in zip(hv, v, strict=True)))
        v = [h.detach() for h in hv]
    return eig
