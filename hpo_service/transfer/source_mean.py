"""The sources' GPs, in the inner designer's coordinates, for a prior mean (HyperBO-style).

Why: a lengthscale prior tells the inner GP how fast the objective changes, but not
where it is low: right after the seeds, with four or five target points, the GP is still
agnostic about the rest of the region, and its expected improvement goes to the corners
where it is most uncertain, although every source shows that the corners are poor. The
average of the sources' standardised posterior means (HyperBO's learned mean, RGPE's
mean transfer) is that knowledge; the engine evaluates it
(``engine.gp_model.AveragedPosteriorMean``, with its own kernel), fits it to the
target's data as ``a + b * mean(x)`` (``b >= 0``, its weight shrinking once the target
has many points) and models only the residual with its own GP. ``b`` is not least
squares alone: the sources' spread in the objective's units (``source_scale``) over the
target's predicts it, and that prediction is its prior, because the target's first few
points sit too close together for least squares to see the mean's shape.

Built per request from the prior stored with the study (``prior.source_prior`` keeps
every source's rows near the region, standardised, and its fitted hyperparameters), in
the inner designer's coordinates (``prior.inner_frame``): arithmetic on at most a few
hundred stored rows, no fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpo_service.domain import SearchSpace
from hpo_service.transfer.coords import EncoderFactory, FloatArray
from hpo_service.transfer.prior import inner_frame

__all__ = ["SourceGPs", "source_gps", "source_scale"]

SourceGPs = tuple[list[int], list[tuple[FloatArray, FloatArray, FloatArray]]]
"""The inner encoded columns the sources cover, and per source its rows in those columns,
its standardised values (to maximise) and its hyperparameters as the engine's
``Hyperparameters.vector`` in inner units: what ``AveragedPosteriorMean`` takes."""


def source_gps(
    record: dict[str, Any],
    space: SearchSpace,
    inner_space: SearchSpace,
    make_encoder: EncoderFactory,
) -> SourceGPs | None:
    """The stored sources' GPs in the inner designer's columns; None without any."""
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
    fits = []
    for src in sources:
        u = np.asarray(src["u"], dtype=np.float64)
        log_rho = np.asarray(src["log_rho"], dtype=np.float64)
        # box units -> inner units on the kept coordinates: one inner unit is
        # scale / width box units, and rho scales with the width squared
        x_inner = (lower + u[:, keep] * width - origin) / scale
        rho_inner = log_rho[keep] + 2.0 * np.log(scale / width)
        vector = np.array([*rho_inner, src["log_scale"], src["log_noise"]], dtype=np.float64)
        fits.append((x_inner, np.asarray(src["y"], dtype=np.float64), vector))
    return [frame.column[names[j]] for j in keep], fits


def source_scale(record: dict[str, Any]) -> float | None:
    """The sources' median spread near the region, in the objective's units, or None.

    The mean is an average of *standardised* posterior means; this number converts it back
    to the objective's units, so the engine can tell what weight ``b`` the sources predict
    for the target's data (``gp_model._mean_weights``). None for a prior stored before it
    was recorded, or when a spread is not positive: then the weight is fitted from the
    target's data alone.
    """
    scales = [src.get("y_scale") for src in record.get("sources") or []]
    if not scales or any(not isinstance(v, int | float) or not v > 0 for v in scales):
        return None
    return float(np.median(np.asarray(scales, dtype=np.float64)))
