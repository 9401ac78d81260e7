"""Optuna's own reusable sampler suites, run on HPOServiceSampler against a live server.

The suites ship in Optuna's wheel (``optuna/testing/pytest_samplers.py``, Optuna >= 4.8):
they are what Optuna holds its own samplers and OptunaHub's to. Each test builds fresh
Optuna studies (in memory) whose relative suggestions come from a service study on the
server of the ``service`` fixture, once on SQLite and once on PostgreSQL.
``SingleOnlySamplerTestCase`` is not run: it asserts that a sampler refuses
multi-objective studies, and this one supports them (the service's ``objectives``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)

from hpo_service.integrations.optuna import HPOServiceSampler
from tests.integrations.conftest import Service

pytestmark = pytest.mark.slow


class _ServiceSampler:
    @pytest.fixture
    def sampler(self, service: Service) -> Iterator[Callable[[], BaseSampler]]:
        made: list[HPOServiceSampler] = []

        def make() -> BaseSampler:
            made.append(HPOServiceSampler(service.url, service.key, seed=0))
            return made[-1]

        yield make
        for sampler in made:  # stop the heartbeats of trials the suite never finishes
            sampler.close()


class TestBasicSampler(_ServiceSampler, BasicSamplerTestCase):
    pass


class TestRelativeSampler(_ServiceSampler, RelativeSamplerTestCase):
    pass


class TestMultiObjectiveSampler(_ServiceSampler, MultiObjectiveSamplerTestCase):
    pass
