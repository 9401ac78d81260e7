from __future__ import annotations

import pytest

from hpo_service.client import HPOClient, ProblemError
from tests.builders import params, study


def test_median_rule_stops_a_bad_trial_and_keeps_its_partial_result(
    client: HPOClient, worker: HPOClient
) -> None:
    s = client.create_study(study(stopping={"rule": "median", "min_steps": 1, "min_trials": 2}))
    trials = worker.suggest(s["id"], "w", 3)["trials"]
    good, also_good, bad = trials
    for t, loss in ((good, 1.0), (also_good, 1.1)):
        assert worker.report(t["id"], "w", 5, {"val_loss": loss}) is False
    assert worker.report(bad["id"], "w", 5, {"val_loss": 9.0}) is True
    assert worker.heartbeat(bad["id"], "w")["should_stop"] is True
    stopped = worker.get_trial(bad["id"])
    assert stopped["state"] == "stopping"
    assert "stopped_early" in stopped["metadata"]
    done = worker.complete(bad["id"], "w", {"val_loss": 9.0})
    assert done["state"] == "completed"
    assert [m["step"] for m in done["measurements"]] == [5]


def test_invalid_stopping_policy_is_422(client: HPOClient) -> None:
    with pytest.raises(ProblemError) as err:
        client.create_study(study(stopping={"rule": "median", "min_trails": 3}))
    assert err.value.status == 422
    assert err.value.errors[0]["loc"] == ["body", "stopping", "min_trails"]
    with pytest.raises(ProblemError) as err:
        client.create_study(study(stopping={"rule": "coinflip"}))
    assert err.value.errors[0]["loc"] == ["body", "stopping", "rule"]


def test_multi_objective_best_is_the_pareto_set(client: HPOClient) -> None:
    s = client.create_study(
        study(
            objectives=[
                {"metric": "val_loss", "goal": "minimize"},
                {"metric": "latency_ms", "goal": "minimize"},
            ]
        )
    )
    assert s["objectives"][1]["metric"] == "latency_ms"
    a = client.add_trial(s["id"], params(lr=1e-3), {"val_loss": 1.0, "latency_ms": 30})
    b = client.add_trial(s["id"], params(lr=2e-3), {"val_loss": 2.0, "latency_ms": 10})
    client.add_trial(s["id"], params(lr=3e-3), {"val_loss": 2.5, "latency_ms": 35})  # dominated
    assert sorted(t["id"] for t in client.best(s["id"])) == sorted([a["id"], b["id"]])
    with pytest.raises(ProblemError) as err:
        client.add_trial(s["id"], params(lr=4e-3), {"val_loss": 1.0})
    assert err.value.errors[0]["loc"] == ["body", "result", "metrics", "latency_ms"]


def test_constraints_exclude_infeasible_results_from_best(client: HPOClient) -> None:
    s = client.create_study(study(constraints=[{"metric": "memory_gb", "op": "<=", "bound": 16}]))
    client.add_trial(s["id"], params(lr=1e-3), {"val_loss": 0.5, "memory_gb": 40})
    ok = client.add_trial(s["id"], params(lr=2e-3), {"val_loss": 0.9, "memory_gb": 12})
    assert [t["id"] for t in client.best(s["id"])] == [ok["id"]]


def test_constraint_on_an_objective_is_422(client: HPOClient) -> None:
    with pytest.raises(ProblemError) as err:
        client.create_study(study(constraints=[{"metric": "val_loss", "bound": 1}]))
    assert err.value.errors[0]["loc"] == ["body", "constraints", 0, "metric"]


def test_transfer_without_sources_searches_the_full_space(client: HPOClient) -> None:
    created = client.create_study(study(transfer={"method": "box", "top_k": 5}))
    assert created["transfer"]["method"] == "box"
    assert created["effective_space"] is None
    assert client.create_study(study(transfer={"method": "none"}))["transfer"]["method"] == "none"
