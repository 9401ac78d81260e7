"""The sources' posterior means as a prior mean for the target's GP (HyperBO-style).

Why: a lengthscale prior tells the inner GP how fast the objective changes, but not
where it is low: right after the seeds, with four or five target points, the GP is still
agnostic about the rest of the region, and its expected improvement goes to the corners
where it is most uncertain, although every source shows that the corners are poor. The
average of the sources' standardised posterior means (HyperBO's learned mean, RGPE's
mean transfer) is that knowledge; the engine fits it to the target's data as
``a + b * mean(x)`` (``engine.gp_model``: least squares, ``b >= 0``, its weight shrinking
once the target has many points) and models only the residual with its own GP.

Built per request from the prior stored with the study (``prior.source_prior`` keeps
every source's rows near the region, standardised, and its fitted hyperparameters), in
the inner designer's coordinates (``prior.inner_frame``): arithmetic on at most a few
hundred stored rows, no fit. Torch is imported here only, and this module only when a
transferred GP study builds its designer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hpo_service.domain import SearchSpace
from hpo_service.transfer.coords import EncoderFactory, FloatArray
from hpo_service.transfer.prior import inner_frame

__all__ = ["SourceMean", "source_mean"]

_MIN_NOISE = 1e-6
_JITTER = 1e-8


def _matern52(sqdist: torch.Tensor) -> torch.Tensor:
    r = torch.sqrt(sqdist.clamp(1e-30, 5000.0) * 5.0)
    return (1.0 + r + r.square() / 3.0) * torch.exp(-r)


class SourceMean:
    """``x (..., n, dim) -> (..., n)``: the average of the sources' posterior means.

    Args:
        columns: the inner encoded columns the sources' coordinates map to.
        points: per source, its rows in those columns, scaled by the inverse lengthscales.
        weights: per source, ``scale * (K + noise I)^-1 y``.
        inv_ls: per source, the inverse lengthscales of the columns.
    """

    def __init__(
        self,
        columns: list[int],
        points: list[FloatArray],
        weights: list[FloatArray],
        inv_ls: list[FloatArray],
    ) -> None:
        self.columns = columns
        self.points = points
        self.weights = weights
        self.inv_ls = inv_ls

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The mean at ``x`` (differentiable, on ``x``'s device and dtype)."""
        xs = x[..., self.columns]
        total = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for pts, w, inv in zip(self.points, self.weights, self.inv_ls, strict=True):
            p = torch.as_tensor(pts, dtype=x.dtype, device=x.device)
            z = xs * torch.as_tensor(inv, dtype=x.dtype, device=x.device)
            sq = (
                z.square().sum(-1, keepdim=True)
                + p.square().sum(-1)
                - 2.0 * z @ p.transpose(-1, -2)
            ).clamp_min(0.0)
            total = total + _matern52(sq) @ torch.as_tensor(w, dtype=x.dtype, device=x.device)
        return total / len(self.points)


def source_mean(
    record: dict[str, Any],
    space: SearchSpace,
    inner_space: SearchSpace,
    make_encoder: EncoderFactory,
) -> SourceMean | None:
    """The sources' mean in the inner designer's columns; None without stored sources."""
    sources = record.get("sources") or []
    names = list(record["names"])
    frame = inner_frame(names, space, inner_space, make_encoder)
    keep = [j for j, n in enumerate(names) if n in frame.column]
    if not sources or not keep:
        return None
    lower = np.asarray(record["lower"])[keep]
    width = np.asarray(record["width"])[keep]
    origin = np.array([frame.origin[names[j]] for j in keep])
    scale = np.array([frame.scale[names[j]] for j in keep])
    points, weights, inv_ls = [], [], []
    for src in sources:
        u = np.asarray(src["u"], dtype=np.float64)
        y = np.asarray(src["y"], dtype=np.float64)
        log_rho = np.asarray(src["log_rho"], dtype=np.float64)
        # the kernel matrix is the same in any affine frame: compute it in box units
        inv_box = np.exp(0.5 * log_rho)
        zb = u * inv_box
        sq = ((zb[:, None, :] - zb[None, :, :]) ** 2).sum(-1)
        k = np.exp(src["log_scale"]) * _matern52(torch.as_tensor(sq)).numpy()
        k += (_MIN_NOISE + np.exp(src["log_noise"]) + _JITTER) * np.eye(len(y))
        alpha = np.linalg.solve(k, y) * np.exp(src["log_scale"])
        # box units -> inner units on the kept coordinates
        x_inner = (lower + u[:, keep] * width - origin) / scale
        inv = inv_box[keep] * scale / width
        points.append(x_inner * inv)
        weights.append(alpha)
        inv_ls.append(inv)
    return SourceMean([frame.column[names[j]] for j in keep], points, weights, inv_ls)
