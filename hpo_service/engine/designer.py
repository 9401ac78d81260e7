"""The designer interface, and what a model-based designer may be built with.

``Designer``, ``Suggestion`` and ``DesignerFactory`` are defined in
``domain.designer`` (so that ``transfer``, which wraps designers and may not import the
engine, shares them) and named here for the engine's designers and their users.

``DesignerPrior`` is what earlier studies tell a model-based designer, in the designer's
own encoded columns: ``registry.make_designer`` hands it to the designers that can use
it, through their constructors, and the others ignore it. The service computes it per
request from a study's stored transfer record (``services.transfer``); nothing here
knows where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hpo_service.domain.designer import Designer, DesignerFactory, Suggestion
from hpo_service.engine.encoding import FloatArray

__all__ = ["Designer", "DesignerFactory", "DesignerPrior", "SourceModels", "Suggestion"]

SourceModels = tuple[list[int], list[tuple[FloatArray, FloatArray, FloatArray]]]
"""Earlier tasks' GPs for a prior mean: the encoded columns they cover, and per task its
``n x len(columns)`` rows, its ``n`` standardised values (to maximise) and its
hyperparameters as ``gp_model.Hyperparameters.vector`` (what ``AveragedPosteriorMean``
takes)."""


@dataclass(frozen=True)
class DesignerPrior:
    """Knowledge from earlier studies for a model-based designer (all optional).

    Attributes:
        initial_design: space-filling points before the model takes over; None keeps
            the designer's own default. Transfer shortens it because the seeds it
            proposes inside the region already are an initial design.
        lengthscale: per encoded column, the centre and width of a Gaussian prior on
            the log inverse squared lengthscale (NaN: the default prior there).
        mean: the earlier tasks' GPs whose averaged posterior mean is the model's prior
            mean; None: zero.
    """

    initial_design: int | None = None
    lengthscale: tuple[Sequence[float], Sequence[float]] | None = None
    mean: SourceModels | None = None
