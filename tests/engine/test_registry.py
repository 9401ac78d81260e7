"""The one place designers are assembled: plain, or informed by earlier studies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpo_service.domain import Objective, SearchSpace, StudyConfig
from hpo_service.engine import registry
from hpo_service.engine.designer import DesignerPrior, Suggestion
from hpo_service.engine.gp import GPDesigner, GPOptions
from hpo_service.engine.gp_model import AveragedPosteriorMean, LengthscalePrior
from hpo_service.engine.random_search import SobolDesigner

SPACE = SearchSpace.model_validate(
    {
        "parameters": [
            {"name": "a", "type": "float", "low": 0.0, "high": 1.0},
            {"name": "b", "type": "float", "low": 0.0, "high": 1.0},
        ]
    }
)
# one earlier task's GP over both columns: three rows, values to maximise, hyperparameters
MEAN = (
    [0, 1],
    [
        (
            np.array([[0.1, 0.2], [0.5, 0.5], [0.9, 0.7]]),
            np.array([1.0, 0.0, -1.0]),
            np.array([0.5, -1.0, 0.0, -6.0]),
        )
    ],
)
PRIOR = DesignerPrior(initial_design=3, lengthscale=([1.0, math.nan], [0.8, 0.8]), mean=MEAN)


def config(algorithm: str) -> StudyConfig:
    return StudyConfig(space=SPACE, objective=Objective(metric="y"), algorithm=algorithm)


def test_a_gp_is_built_with_the_prior_in_its_options() -> None:
    d = registry.make_designer(config("gp"), 0, PRIOR)
    assert isinstance(d, GPDesigner)
    assert d.options.n_initial == 3
    assert d.options.lengthscale_prior == LengthscalePrior((1.0, math.nan), (0.8, 0.8))
    assert isinstance(d.options.prior_mean, AveragedPosteriorMean)
    # everything else as a plain GP has it
    plain = registry.make_designer(config("gp"), 0)
    assert isinstance(plain, GPDesigner)
    assert plain.options == GPOptions()
    assert d.options.training_cap == plain.options.training_cap
    assert d.options.cache is plain.options.cache


def test_an_empty_prior_changes_nothing_but_what_it_names() -> None:
    d = registry.make_designer(config("gp"), 0, DesignerPrior(initial_design=4))
    assert isinstance(d, GPDesigner)
    assert d.options == GPOptions(n_initial=4)


@pytest.mark.parametrize("algorithm", ["random", "sobol", "local"])
def test_designers_without_a_model_prior_ignore_it(algorithm: str) -> None:
    informed = registry.make_designer(config(algorithm), 5, PRIOR)
    plain = registry.make_designer(config(algorithm), 5)
    assert type(informed) is type(plain)
    informed.update([], [])
    plain.update([], [])
    assert informed.suggest(3) == plain.suggest(3)


def test_registering_a_name_again_drops_its_informed_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "_INFORMED", dict(registry._INFORMED))
    registry.register("gp", SobolDesigner)
    assert isinstance(registry.make_designer(config("gp"), 0, PRIOR), SobolDesigner)
    built: list[DesignerPrior] = []

    def informed(c: StudyConfig, seed: int | None, prior: DesignerPrior) -> SobolDesigner:
        built.append(prior)
        return SobolDesigner(c, seed)

    registry.register("gp", SobolDesigner, informed)
    registry.make_designer(config("gp"), 0)
    assert built == []
    registry.make_designer(config("gp"), 0, PRIOR)
    assert built == [PRIOR]


def test_suggestion_is_the_domain_type() -> None:
    from hpo_service.domain.designer import Suggestion as DomainSuggestion

    assert Suggestion is DomainSuggestion
