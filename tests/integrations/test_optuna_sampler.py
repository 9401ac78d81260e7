"""HPOServiceSampler against a live server: what reaches the service, and when.

Optuna's suite (``test_optuna_sampler_suite.py``) checks what Optuna sees; these check
the other side: one service study per Optuna study and space, leases served at exactly
the values the trials used, outcomes mapped to complete / fail / infeasible, fixed
parameters released and recorded, same seed same suggestions, and a fallback when the
service cannot be reached.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest
from optuna.trial import Trial, TrialState

from hpo_service.client import HPOClient, ProblemError
from hpo_service.client.models import Trial as ServiceTrial
from hpo_service.integrations.optuna import STUDY_ATTR_PREFIX, TRIAL_ATTR, HPOServiceSampler
from tests.integrations.conftest import Service

pytestmark = pytest.mark.slow


@pytest.fixture
def client(service: Service) -> Iterator[HPOClient]:
    with HPOClient(service.url, service.key) as c:
        yield c


@pytest.fixture
def make_sampler(service: Service) -> Iterator[Callable[..., HPOServiceSampler]]:
    made: list[HPOServiceSampler] = []

    def make(**kw: Any) -> HPOServiceSampler:
        made.append(HPOServiceSampler(service.url, service.key, **kw))
        return made[-1]

    yield make
    for sampler in made:
        sampler.close()


def _service_studies(study: optuna.Study) -> dict[str, str]:
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {k: v for k, v in attrs.items() if k.startswith(STUDY_ATTR_PREFIX)}


def _by_optuna_trial(client: HPOClient, study_id: str) -> dict[int, ServiceTrial]:
    out: dict[int, ServiceTrial] = {}
    for t in client.trials.iter(study_id):
        if t.source == "user":
            out[int(t.metadata["optuna_trial"])] = t
        elif t.worker_id is not None:
            out[int(t.worker_id.removeprefix("optuna-"))] = t
    return out


def test_one_service_study_serves_the_values_every_trial_used(
    make_sampler: Callable[..., HPOServiceSampler], client: HPOClient
) -> None:
    study = optuna.create_study(sampler=make_sampler(seed=1))

    def objective(trial: Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        n = trial.suggest_int("n", 1, 64, log=True)
        c = trial.suggest_categorical("c", [None, 1.5, "b"])
        return (x - 1) ** 2 + math.log(n) + (c == "b")

    study.optimize(objective, n_trials=8)
    [study_id] = _service_studies(study).values()
    service = client.studies.get(study_id)
    assert [p.name for p in service.space.parameters] == ["c", "n", "x"]
    assert service.objective.metric == "value"
    served = _by_optuna_trial(client, study_id)
    assert sorted(served) == list(range(8))
    assert served[0].source == "user"  # trial 0 ran before any space existed: history
    for trial in study.trials[1:]:
        leased = served[trial.number]
        assert trial.system_attrs[TRIAL_ATTR]["trial"] == leased.id
        assert leased.state == "completed"
        assert leased.result is not None
        assert leased.result.metrics == {"value": trial.value}
        assert leased.params["x"] == trial.params["x"]
        assert leased.params["n"] == trial.params["n"]
        choice = trial.params["c"]
        assert leased.params["c"] == (choice if isinstance(choice, str) else repr(choice))
        assert leased.cost is not None
        assert leased.cost["optuna_trial"] == trial.number


def test_several_objectives_are_the_service_studys_objectives(
    make_sampler: Callable[..., HPOServiceSampler], client: HPOClient
) -> None:
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=make_sampler())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["loss", "accuracy"])

    def objective(trial: Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0, 1)
        return x**2, 1 - (x - 0.5) ** 2

    study.optimize(objective, n_trials=4)
    [study_id] = _service_studies(study).values()
    service = client.studies.get(study_id)
    assert service.objectives is not None
    assert [(o.metric, o.goal) for o in service.objectives] == [
        ("loss", "minimize"),
        ("accuracy", "maximize"),
    ]
    done = [t for t in client.trials.iter(study_id) if t.source != "user"]
    assert len(done) == 3
    for t in done:
        assert t.result is not None
        assert set(t.result.metrics) == {"loss", "accuracy"}


def test_outcomes_map_to_complete_fail_and_infeasible(
    make_sampler: Callable[..., HPOServiceSampler], client: HPOClient
) -> None:
    study = optuna.create_study(sampler=make_sampler(seed=3))

    def objective(trial: Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise ValueError("diverged")
        if trial.number == 2:
            trial.report(0.75, step=4)
            raise optuna.TrialPruned
        if trial.number == 3:
            trial.report(0.5, step=0)
            return math.inf
        return x

    study.optimize(objective, n_trials=5, catch=(ValueError,))
    [study_id] = _service_studies(study).values()
    served = _by_optuna_trial(client, study_id)
    assert [study.trials[n].state for n in (1, 2, 3)] == [
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.COMPLETE,
    ]
    assert served[1].state == "failed"
    assert "failed" in (served[1].error or "")
    assert served[2].state == "completed"  # pruned: completed with the last reported value
    assert served[2].result is not None
    assert served[2].result.metrics == {"value": 0.75}
    assert served[2].cost is not None
    assert served[2].cost["pruned_at_step"] == 4
    assert served[3].state == "infeasible"
    assert served[4].state == "completed"


def test_fixed_values_release_the_lease_and_are_recorded_as_they_ran(
    make_sampler: Callable[..., HPOServiceSampler], client: HPOClient
) -> None:
    study = optuna.create_study(sampler=make_sampler(seed=4))

    def objective(trial: Trial) -> float:
        return (trial.suggest_float("x", 0, 1) - 0.3) ** 2 + trial.suggest_float("y", 0, 1)

    study.optimize(objective, n_trials=2)
    study.enqueue_trial({"x": 0.25})  # x fixed; y still comes from the lease
    study.optimize(objective, n_trials=1)
    [study_id] = _service_studies(study).values()
    fixed = study.trials[2]
    assert fixed.params["x"] == 0.25
    released = client.trials.get(fixed.system_attrs[TRIAL_ATTR]["trial"])
    assert released.params["y"] == fixed.params["y"]
    assert released.params["x"] != 0.25
    assert released.state == "requested"  # its suggestion waits for the next trial
    user = [t for t in client.trials.iter(study_id) if t.metadata.get("optuna_trial") == 2]
    assert [(t.source, t.params, t.state) for t in user] == [("user", fixed.params, "completed")]

    study.optimize(objective, n_trials=1)  # the released point is served first
    again = client.trials.get(released.id)
    assert again.state == "completed"
    assert again.worker_id == "optuna-3"
    assert study.trials[3].params["x"] == again.params["x"]


def test_same_seed_same_suggestions(make_sampler: Callable[..., HPOServiceSampler]) -> None:
    def run() -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=make_sampler(seed=7))
        study.optimize(
            lambda t: t.suggest_float("x", -1, 1) ** 2 + t.suggest_int("k", 0, 9), n_trials=6
        )
        return [t.params for t in study.trials]

    assert run() == run()


def test_unreachable_service_falls_back_to_independent_sampling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sampler = HPOServiceSampler("http://127.0.0.1:9", "k", seed=0, retry_deadline=0.5)
    study = optuna.create_study(sampler=sampler)
    with caplog.at_level(logging.WARNING, logger="hpo_service.integrations.optuna"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    sampler.close()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert "sampling independently" in caplog.text
    assert not _service_studies(study)


def test_a_bad_key_is_an_error_not_a_fallback(service: Service) -> None:
    sampler = HPOServiceSampler(service.url, "hpo_key_not_a_key", seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ProblemError) as raised:
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    sampler.close()
    assert raised.value.status == 401
