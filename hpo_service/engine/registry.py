"""Algorithm names → designer factories, and the default algorithm.

Designers register here by name; a study stores the name, and every suggestion request
builds the designer afresh through this table. Unknown names are rejected when the study
is created, never later.

This is the one place a designer is assembled. A designer that can use knowledge from
earlier studies (a ``DesignerPrior``) also has an informed factory, which passes it to
the designer's constructor; nobody reaches into a built designer to change its options.
"""

from __future__ import annotations

from collections.abc import Callable

from hpo_service.domain import StudyConfig
from hpo_service.engine.designer import Designer, DesignerFactory, DesignerPrior
from hpo_service.engine.local_search import make_local_designer
from hpo_service.engine.random_search import RandomDesigner, SobolDesigner
from hpo_service.errors import UnknownAlgorithmError

__all__ = [
    "InformedFactory",
    "available_algorithms",
    "check_algorithm",
    "default_algorithm",
    "make_designer",
    "register",
]

InformedFactory = Callable[[StudyConfig, int | None, DesignerPrior], Designer]
"""Builds a designer that starts from what earlier studies showed (``DesignerPrior``)."""


def _gp(config: StudyConfig, seed: int | None, prior: DesignerPrior | None = None) -> Designer:
    """Build the GP designer, importing BoTorch only when a GP study first needs it.

    Importing torch and BoTorch costs seconds; deferring it keeps `hpo` commands and
    server start-up fast for studies that never use the GP.
    """
    from hpo_service.engine.gp import GPDesigner, GPOptions

    return GPDesigner(config, seed, None if prior is None else GPOptions.informed(prior))


_FACTORIES: dict[str, DesignerFactory] = {
    "random": RandomDesigner,
    "sobol": SobolDesigner,
    "gp": _gp,
    "local": make_local_designer,
}
# Designers that use a ``DesignerPrior``; the others are built plain and ignore it.
_INFORMED: dict[str, InformedFactory] = {"gp": _gp}
# Preference order for studies that name no algorithm: the best one this build offers.
_PREFERENCE = ["gp", "sobol", "random"]


def register(name: str, factory: DesignerFactory, informed: InformedFactory | None = None) -> None:
    """Make ``factory`` available under ``name`` (later registrations replace earlier).

    Args:
        name: the algorithm name studies store.
        factory: builds the designer.
        informed: builds it from a ``DesignerPrior`` too; None: the designer ignores
            priors (a replaced name loses its previous informed factory).
    """
    _FACTORIES[name] = factory
    _INFORMED.pop(name, None)
    if informed is not None:
        _INFORMED[name] = informed


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


def make_designer(
    config: StudyConfig, seed: int | None, prior: DesignerPrior | None = None
) -> Designer:
    """Build the study's designer for one request.

    Args:
        config: the study (or the narrowed copy a wrapper builds its inner designer for).
        seed: the request seed.
        prior: what earlier studies showed, in ``config.space``'s encoded columns; given
            to designers with an informed factory, ignored by the others.
    """
    name = check_algorithm(config.algorithm)
    informed = _INFORMED.get(name)
    if prior is not None and informed is not None:
        return informed(config, seed, prior)
    return _FACTORIES[name](config, seed)
