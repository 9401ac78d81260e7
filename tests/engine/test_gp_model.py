"""The MAP fit's stopping tolerance grows with the rows and still finds the optimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpo_service.engine.gp_model import (
    GTOL,
    GTOL_ROWS,
    Hyperparameters,
    fit_hyperparameters,
    fit_tolerance,
)


def test_tolerance_is_fixed_for_small_studies_and_grows_with_rows() -> None:
    assert fit_tolerance(1) == GTOL
    assert fit_tolerance(GTOL_ROWS) == GTOL
    assert fit_tolerance(6 * GTOL_ROWS) == pytest.approx(6 * GTOL)


def test_the_scaled_tolerance_stops_close_to_the_polished_optimum() -> None:
    rng = np.random.default_rng(0)
    n, d = 300, 6
    x = torch.tensor(rng.random((n, d)), dtype=torch.float64)
    f = torch.sin(6 * x[:, 0]) + (x[:, 1] - 0.5) ** 2 + 0.3 * x[:, 2]
    y = f + 0.01 * torch.tensor(rng.normal(size=n), dtype=torch.float64)
    y = (y - y.mean()) / y.std()
    start = Hyperparameters.default(d)
    scaled, scaled_loss = fit_hyperparameters(x, y, start)
    polished, polished_loss = fit_hyperparameters(x, y, scaled, gtol=1e-5)
    assert scaled_loss - polished_loss == pytest.approx(0.0, abs=0.05)
    # Lengthscales of the relevant dimensions agree to a few percent.
    assert np.allclose(scaled.lengthscales[:3], polished.lengthscales[:3], rtol=0.05)
