"""Algorithm names → designer factories, and the default algorithm.

Designers register here by name; a study stores the name, and every suggestion request
builds the designer afresh through this table. Unknown names are rejected when the study
is created, never later.
"""

from __future__ import annotations

from hpo_service.domain import StudyConfig
from hpo_service.engine.designer import Designer, DesignerFactory
from hpo_service.engine.local_search import make_local_designer
from hpo_service.engine.random_search import RandomDesigner, SobolDesigner
from hpo_service.errors import UnknownAlgorithmError

__all__ = [
    "available_algorithms",
    "check_algorithm",
    "default_algorithm",
    "make_designer",
    "register",
]


def _gp(config: StudyConfig, seed: int | None) -> Designer:
    """Build the GP designer, importing BoTorch only when a GP study first needs it.

    Importing torch and BoTorch costs seconds; deferring it keeps `hpo` commands and
    server start-up fast for studies that never use the GP.
    """
    from hpo_service.engine.gp import GPDesigner

    return GPDesigner(config, seed)


_FACTORIES: dict[str, DesignerFactory] = {
    "random": RandomDesigner,
    "sobol": SobolDesigner,
    "gp": _gp,
    "local": make_local_designer,
}
# Preference order for studies that name no algorithm: the best one this build offers.
_PREFERENCE = ["gp", "sobol", "random"]


def register(name: str, factory: DesignerFactory) -> None:
    """Make ``factory`` available under ``name`` (later registrations replace earlier)."""
    _FACTORIES[name] = factory


def available_algorithms() -> list[str]:
    """Names a study may choose, sorted."""
    return sorted(_FACTORIES)


def default_algorithm() -> str:
    """The best available designer; ``gp`` once the BoTorch engine is present."""
    for name in _PREFERENCE:
        if name in _FACTORIES:
            return name
    raise RuntimeError("no designer registered")


def check_algorithm(name: str) -> str:
    """Return ``name`` if a designer of that name exists.

    Raises:
        UnknownAlgorithmError: naming the algorithms that do exist.
    """
    if name not in _FACTORIES:
        raise UnknownAlgorithmError.at(
            ("body", "algorithm"),
            f"unknown algorithm {name!r}; available: {', '.join(available_algorithms())}",
        )
    return name


def make_designer(config: StudyConfig, seed: int | None) -> Designer:
    """Build the study's designer for one request."""
    return _FACTORIES[check_algorithm(config.algorithm)](config, seed)
