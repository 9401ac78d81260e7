"""The kriging-believer log EI: the model's posterior, pending points believed at its mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from botorch.acquisition.analytic import LogExpectedImprovement

from hpo_service.engine.believer import BelieverLogEI
from hpo_service.engine.gp_model import fit_gp


def _model(n: int = 40, d: int = 3, seed: int = 0) -> tuple[object, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.random((n, d)), dtype=torch.float64)
    y = (torch.sin(4 * x).sum(-1) - (x - 0.4).square().sum(-1)).unsqueeze(-1)
    model, _ = fit_gp(x, y)
    return model, x


def _standardised_posterior(model: object, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    post = model.posterior(x)  # type: ignore[attr-defined]
    transform = model.outcome_transform  # type: ignore[attr-defined]
    mean = (post.mean.squeeze(-1) - transform.means.squeeze()) / transform.stdvs.squeeze()
    std = post.variance.squeeze(-1).sqrt() / transform.stdvs.squeeze()
    return mean, std


def test_without_pending_it_is_the_models_log_ei() -> None:
    model, x = _model()
    believer = BelieverLogEI.from_model(model, x[:0])
    test = torch.tensor(np.random.default_rng(1).random((64, 3)), dtype=torch.float64)
    mean, std = believer.mean_and_std(test)
    ref_mean, ref_std = _standardised_posterior(model, test)
    assert torch.allclose(mean, ref_mean, atol=1e-8)
    assert torch.allclose(std, ref_std, atol=1e-8)
    # Same incumbent: BoTorch's closed form differs by log(outcome std) everywhere.
    best = believer.best_f * float(model.outcome_transform.stdvs) + float(  # type: ignore[attr-defined]
        model.outcome_transform.means  # type: ignore[attr-defined]
    )
    ref = LogExpectedImprovement(model, best_f=best)(test[:, None, :])  # type: ignore[arg-type]
    diff = (ref - believer(test[:, None, :])).detach()
    assert float(diff.std()) < 1e-4  # moments agree to 1e-8; far tails of log EI amplify it
    assert float(diff.mean()) == pytest.approx(
        float(model.outcome_transform.stdvs.log()),  # type: ignore[attr-defined]
        abs=1e-5,
    )


def test_pending_points_keep_the_mean_and_remove_the_uncertainty_there() -> None:
    model, x = _model()
    pending = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]], dtype=torch.float64)
    plain = BelieverLogEI.from_model(model, x[:0])
    believer = BelieverLogEI.from_model(model, pending)
    far = torch.tensor([[0.05, 0.05, 0.95]], dtype=torch.float64)
    near = pending + 1e-3
    mean, std = believer.mean_and_std(torch.cat([near, far]))
    plain_mean, plain_std = plain.mean_and_std(torch.cat([near, far]))
    assert torch.allclose(mean, plain_mean, atol=1e-8)
    assert (std[:2] < 0.1 * plain_std[:2]).all()
    assert float(std[2]) == pytest.approx(float(plain_std[2]), rel=0.05)
    # Proposing next to a running trial promises (almost) nothing.
    near_ei = believer(near[:, None, :])
    assert (near_ei < plain(near[:, None, :]) - 5).all()


def test_a_pending_point_above_the_incumbent_raises_it() -> None:
    model, x = _model()
    plain = BelieverLogEI.from_model(model, x[:0])
    grid = torch.tensor(np.random.default_rng(2).random((2000, 3)), dtype=torch.float64)
    mean, _ = plain.mean_and_std(grid)
    top = grid[int(mean.argmax())].unsqueeze(0)
    assert float(mean.max()) > plain.best_f
    believer = BelieverLogEI.from_model(model, top)
    assert believer.best_f == pytest.approx(float(mean.max()), abs=1e-9)


def test_gradients_flow_and_batches_must_be_single_points() -> None:
    model, x = _model()
    believer = BelieverLogEI.from_model(model, x[:2] + 0.05)
    z = torch.full((4, 1, 3), 0.5, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(believer(z).sum(), z)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="single points"):
        believer(torch.zeros(2, 3, 3, dtype=torch.float64))


def test_closed_form_gradient_matches_autograd_of_the_same_formula() -> None:
    from botorch.acquisition.analytic import _log_ei_helper

    model, x = _model()
    believer = BelieverLogEI.from_model(model, x[:3] + 0.03)
    rng = np.random.default_rng(3)
    # Random points, points next to pending and observed ones (variance near the floor).
    z = torch.tensor(
        np.vstack([rng.random((20, 3)), x[:3].numpy() + 0.031, x[5:8].numpy() + 1e-4]),
        dtype=torch.float64,
        requires_grad=True,
    )
    mean, std = believer.mean_and_std(z)
    reference = _log_ei_helper((mean - believer.best_f) / std) + std.log()
    (expected,) = torch.autograd.grad(reference.sum(), z)
    value = believer(z.unsqueeze(-2))
    (got,) = torch.autograd.grad(value.sum(), z)
    assert torch.allclose(value, reference, rtol=1e-10, atol=1e-8)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(believer(z.unsqueeze(-2)), reference, rtol=1e-10, atol=1e-8)
