"""Optuna on the service: a sampler backed by a service study, and history import.

``HPOServiceSampler`` lets ``study.optimize`` in any number of processes draw its
relative suggestions from one service study (leased, heartbeated, never lost with a
process); ``import_optuna_study`` (``hpo import --from-optuna``) turns an Optuna study's
history into a service study. Needs the ``optuna`` extra:
``pip install 'hpo_service[optuna]'``.
"""

try:
    import optuna as _optuna  # noqa: F401  (fail here, with the extra to install)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "hpo_service.integrations.optuna needs Optuna: pip install 'hpo_service[optuna]'"
    ) from exc

from hpo_service.integrations.optuna._history import ImportReport, import_optuna_study
from hpo_service.integrations.optuna._sampler import (
    STUDY_ATTR_PREFIX,
    TRIAL_ATTR,
    HPOServiceSampler,
)
from hpo_service.integrations.optuna._space import SpaceCodec, objectives_spec

__all__ = [
    "STUDY_ATTR_PREFIX",
    "TRIAL_ATTR",
    "HPOServiceSampler",
    "ImportReport",
    "SpaceCodec",
    "import_optuna_study",
    "objectives_spec",
]
