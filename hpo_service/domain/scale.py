"""A study's ``scale``: parameterisation, readout flavour, optimiser, proxy shape.

The data model only; ``scaling.config.validate_scale`` turns a request's JSON into one
(with errors located under ``("body", "scale", ...)``) and the rule tables in
``scaling/`` give it meaning. It sits in the domain, not in ``scaling/``, because a study
carries it: the database maps stored rows to a typed ``StudyConfig``, and ``db`` may not
import ``scaling`` (independent siblings in the layer contract).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from hpo_service.domain.shape import ModelShape

__all__ = ["OptimizerName", "Parameterization", "Readout", "ScaleConfig"]

# The vocabularies of ``scaling.rules`` (PARAMETERIZATIONS, READOUTS, OPTIMIZERS); a test
# keeps them equal.
Parameterization = Literal["sp", "mup", "depth_mup", "completep", "completedp", "moe_mup"]
Readout = Literal["multiplier", "init"]
OptimizerName = Literal["adamw", "muon", "lion", "sophia"]


class ScaleConfig(BaseModel):
    """How a study's hyperparameters scale.

    Attributes:
        parameterization: the rule family (``sp`` ... ``moe_mup``).
        readout: µP readout flavour: ``multiplier`` (TP5 Table 8, α_out/m_N in the
            forward pass) or ``init`` (Table 3 / Complete(d)P: readout init var ×m_N⁻²,
            LR ×m_N⁻¹). Equivalent in exact arithmetic; pick the one your code uses.
        optimizer: ``adamw``, ``muon`` (hidden matrices), ``lion``; ``sophia`` only in
            studies stored before new ones were refused it.
        proxy: the shape the study's trials train at.
        base: the shape at which the trial values are expressed (the µP "base shape");
            defaults to ``proxy``. Only differs when several studies of a ladder share
            one base shape.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    parameterization: Parameterization
    readout: Readout = "multiplier"
    optimizer: OptimizerName = "adamw"
    proxy: ModelShape
    base: ModelShape | None = None

    @property
    def base_shape(self) -> ModelShape:
        """The reference shape of the values: ``base`` or else ``proxy``."""
        return self.base or self.proxy

    @property
    def is_moe(self) -> bool:
        """Whether the parameterisation handles mixtures of experts."""
        return self.parameterization == "moe_mup"

    def to_json(self) -> dict[str, object]:
        """The stored and shown form: what was validated, unset shapes left out."""
        return self.model_dump(mode="json", exclude_none=True)
