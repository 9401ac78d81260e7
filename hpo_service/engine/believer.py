"""Log expected improvement with pending trials believed at the model's mean (one point).

Why not BoTorch's ``qLogNoisyExpectedImprovement`` with ``X_pending``: it scores every
candidate jointly with all pending points and a 64-row baseline, by Monte Carlo, through
GPyTorch's posterior machinery. At 300 trials and 8 pending, one evaluation of 8
restarts took 10-30 ms, most of it Python overhead, and the acquisition optimiser spent
80% of a request there (issue #18 item 2).

The kriging believer (Ginsbourger et al., 2010) handles the pending points instead:
each is added to the training data as an observation equal to the GP's posterior mean
there. The posterior mean is then unchanged everywhere, the variance shrinks near every
pending point, and the incumbent becomes the best posterior mean over observed and
pending points. A candidate close to a pending trial therefore promises nothing the
pending trial does not already promise, which is what keeps parallel workers apart.
Everything is a few dense tensor operations on a Cholesky factor computed once per
request, so one evaluation costs well under a millisecond.

The kernel is the model's own (ARD Matérn-5/2 with its output scale and noise), so
only the pending points' treatment differs from the BoTorch path.
"""

from __future__ import annotations

from typing import Any

import torch
from botorch.acquisition.analytic import _log_ei_helper

from hpo_service.engine.gp_model import matern52

__all__ = ["BelieverLogEI"]

# Posterior variances below this (in standardised units) are rounding error; the floor
# keeps log(sigma) and its gradient finite at observed and believed points.
_MIN_VARIANCE = 1e-12


class BelieverLogEI:
    """``b x 1 x d -> b``: log EI of single points under the believer-conditioned GP.

    Args:
        train_x: ``n x d`` observed inputs.
        train_y: length-``n`` observed outputs on the model's (standardised) scale,
            to be maximised.
        lengthscales: length-``d`` kernel lengthscales.
        outputscale: kernel variance.
        noise: observation noise variance (jitter included by the caller or not).
        pending_x: ``p x d`` inputs of trials still running (may be empty).
    """

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        lengthscales: torch.Tensor,
        outputscale: float,
        noise: float,
        pending_x: torch.Tensor,
    ) -> None:
        self._inv_ls = 1.0 / lengthscales
        self._scale = outputscale
        with torch.no_grad():
            train = train_x * self._inv_ls
            chol, alpha = self._factor(train, train_y, noise)
            believed = self._cross(pending_x * self._inv_ls, train) @ alpha
            self.best_f = float(torch.cat([self._cross(train, train) @ alpha, believed]).max())
            points = torch.cat([train, pending_x * self._inv_ls])
            if len(pending_x):
                chol, _ = self._factor(points, torch.cat([train_y, believed]), noise)
            # One product per evaluation gives both moments: the first column holds the
            # weights of the mean (a believed observation moves it nowhere, so its weight
            # is zero), the rest the inverse Cholesky factor, which turns the variance's
            # triangular solve into a matrix product (several times faster for the
            # thousands of raw points scored).
            eye = torch.eye(len(chol), dtype=chol.dtype, device=chol.device)
            weights = torch.cat([alpha, alpha.new_zeros(len(pending_x))]).unsqueeze(-1)
            inv_t = torch.linalg.solve_triangular(chol, eye, upper=False).T
            self._points = points
            self._points_sq = points.square().sum(-1)
            self._weights = torch.cat([weights, inv_t], dim=-1)

    @classmethod
    def from_model(cls, model: Any, pending_x: torch.Tensor) -> BelieverLogEI:
        """The believer on a fitted ``SingleTaskGP`` (``gp_model.fit_gp``, zero mean).

        Reads the model's training data on its standardised scale, its ARD Matérn-5/2
        lengthscales, output scale and noise, so both paths score with the same GP.
        """
        kernel = model.covar_module
        return cls(
            model.train_inputs[0].detach(),
            model.train_targets.detach(),
            kernel.base_kernel.lengthscale.detach().reshape(-1),
            float(kernel.outputscale.detach()),
            float(model.likelihood.noise.detach().reshape(-1)[0]),
            pending_x,
        )

    def _cross(
        self, z: torch.Tensor, points: torch.Tensor, points_sq: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Kernel between scaled inputs ``z`` (``... x d``) and scaled ``points``."""
        sq = points.square().sum(-1) if points_sq is None else points_sq
        sqdist = (z.square().sum(-1, keepdim=True) + sq - 2.0 * z @ points.T).clamp_min(0.0)
        return self._scale * matern52(sqdist)

    def _factor(
        self, z: torch.Tensor, y: torch.Tensor, noise: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cholesky factor of the noisy kernel matrix at scaled inputs, and ``K^-1 y``."""
        k = self._cross(z, z) + noise * torch.eye(len(z), dtype=z.dtype, device=z.device)
        chol, info = torch.linalg.cholesky_ex(k)
        if int(info) != 0:
            eye = torch.eye(len(z), dtype=z.dtype, device=z.device)
            chol = torch.linalg.cholesky(k + 1e-6 * eye)
        return chol, torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)

    def mean_and_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation at ``b x d`` inputs (differentiable)."""
        k = self._cross(x * self._inv_ls, self._points, self._points_sq)
        out = k @ self._weights  # b x (1 + n + p)
        var = self._scale - out[:, 1:].square().sum(-1)
        return out[:, 0], var.clamp_min(_MIN_VARIANCE).sqrt()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Log EI of each ``b x 1 x d`` batch's single point: a length-``b`` tensor."""
        if x.shape[-2] != 1:
            raise ValueError(f"BelieverLogEI scores single points, got q = {x.shape[-2]}")
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.value_and_grad(x[..., 0, :], with_grad=False)[0]
        out: torch.Tensor = _WithGradient.apply(x[..., 0, :], self)  # type: ignore[no-untyped-call]
        return out

    def value_and_grad(
        self, x: torch.Tensor, *, with_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log EI at ``b x d`` inputs and its ``b x d`` gradient, in closed form.

        Why not autograd: the acquisition optimiser calls this a hundred times per
        request on a handful of points, where autograd's graph costs more than the
        arithmetic. With ``q`` the squared scaled distance to a training point and
        ``r = sqrt(5 q)``, the Matérn-5/2 kernel's ``dk/dq = -(5/6) s (1 + r) e^-r``;
        ``dq/dz = 2 (z - p)``; the mean is linear in ``k``, the standard deviation's
        ``d std/dk = -(v W_v^T) / std``; and log EI's ``d log h(u)/du = Phi(u) / h(u)``.
        """
        x = x.detach()
        z = x * self._inv_ls
        sqdist = (
            z.square().sum(-1, keepdim=True) + self._points_sq - 2.0 * z @ self._points.T
        ).clamp_min(0.0)
        k = self._scale * matern52(sqdist)
        out = k @ self._weights
        v = out[:, 1:]
        var = self._scale - v.square().sum(-1)
        std = var.clamp_min(_MIN_VARIANCE).sqrt()
        u = (out[:, 0] - self.best_f) / std
        log_h = _log_ei_helper(u)
        value = log_h + std.log()
        if not with_grad:
            return value, None
        dlogh = torch.exp(torch.special.log_ndtr(u) - log_h)
        d_mean = dlogh / std
        d_std = torch.where(var > _MIN_VARIANCE, (1.0 - dlogh * u) / std, 0.0)
        d_k = d_mean.unsqueeze(-1) * self._weights[:, 0] - (d_std / std).unsqueeze(-1) * (
            v @ self._weights[:, 1:].T
        )
        r = torch.sqrt(sqdist.clamp(1e-30, 5000.0) * 5.0)
        g = d_k * (-(5.0 / 6.0) * self._scale) * (1.0 + r) * torch.exp(-r)
        d_z = 2.0 * (z * g.sum(-1, keepdim=True) - g @ self._points)
        return value, d_z * self._inv_ls


class _WithGradient(torch.autograd.Function):
    """Autograd hook for ``BelieverLogEI.value_and_grad``'s closed-form gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, believer: BelieverLogEI) -> torch.Tensor:
        value, grad = believer.value_and_grad(x)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        (grad,) = ctx.saved_tensors
        return grad_out.unsqueeze(-1) * grad, None
