"""The sources' GPs, in the inner designer's coordinates, for a prior mean (HyperBO-style).

Why: a lengthscale prior tells the inner GP how fast the objective changes, but not
where it is low: right after the seeds, with four or five target points, the GP is still
agnostic about the rest of the region, and its expected improvement goes to the corners
where it is most uncertain, although every source shows that the corners are poor. The
average of the sources' standardised posterior means (HyperBO's learned mean, RGPE's
mean transfer) is that knowledge; the engine evaluates it
(``engine.gp_model.AveragedPosteriorMean``, with its own kernel), fits it to the
target's data as ``a + b * mean(x)`` (least squares, ``b >= 0``, its weight shrinking once
the target has many points) and models only the residual with its own GP.

Built per request from the prior stored with the study (``prior.source_prior`` keeps
every source's rows near the region, standardised, and its fitted hyperparameters), in
the inner designer's coordinates (``prior.inner_frame``): arithmetic on at most a few
hundred stored rows, no fit.
"""

from __future__ import annotations

import numpy as np

from hpo_service.domain import SourcePrior
from hpo_service.transfer.coords import FloatArray
from hpo_service.transfer.prior import InnerFrame

__all__ = ["SourceGPs", "source_gps"]

SourceGPs = tuple[list[int], list[tuple[FloatArray, FloatArray, FloatArray]]]
"""The inner encoded columns the sources cover, and per source its rows in those columns,
its standardised values (to maximise) and its hyperparameters as the engine's
``Hyperparameters.vector`` in inner units: what ``AveragedPosteriorMean`` takes."""


def source_gps(record: SourcePrior, frame: InnerFrame) -> SourceGPs | None:
    """The stored sources' GPs in the inner designer's columns; None without any.

    ``frame`` is ``prior.inner_frame`` of the record's names for the narrowed space the
    inner designer is built for (shared with ``prior.inner_prior``).
    """
    names = list(record.names)
    keep = [j for j, n in enumerate(names) if n in frame.column]
    if not record.sources or not keep:
        return None
    lower = np.asarray(record.lower)[keep]
    width = np.asarray(record.width)[keep]
    origin = np.array([frame.origin[names[j]] for j in keep])
    scale = np.array([frame.scale[names[j]] for j in keep])
    fits = []
    for src in record.sources:
        u = np.asarray(src.u, dtype=np.float64)
        log_rho = np.asarray(src.log_rho, dtype=np.float64)
        # box units -> inner units on the kept coordinates: one inner unit is
        # scale / width box units, and rho scales with the width squared
        x_inner = (lower + u[:, keep] * width - origin) / scale
        rho_inner = log_rho[keep] + 2.0 * np.log(scale / width)
        vector = np.array([*rho_inner, src.log_scale, src.log_noise], dtype=np.float64)
        fits.append((x_inner, np.asarray(src.y, dtype=np.float64), vector))
    return [frame.column[names[j]] for j in keep], fits
