"""The typed SDK against the real app: every answer the service sends parses into its model.

The mock-transport tests pin what the SDK sends; these pin that its models agree with
what the server's schemas actually produce (datetimes, nullable fields, pages, tokens).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hpo_service.client import HPOClient, ProblemError, Study, Trial
from tests.builders import params, study

SCALE = {
    "parameterization": "mup",
    "proxy": {"width": 256, "depth": 4, "batch_size": 32, "tokens": 2e7},
}
MUP_SPACE = {
    "parameters": [
        {"name": "lr.hidden", "type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        {"name": "dropout", "type": "float", "low": 0.0, "high": 0.5},
    ]
}


def test_a_trial_lifecycle_in_typed_answers(client: HPOClient, worker: HPOClient) -> None:
    created = client.studies.create(study(max_trials=5, family="sdk"))
    assert isinstance(created, Study)
    assert created.created_at.tzinfo is not None
    assert created.space.names() == ["lr", "layers", "optimizer", "batch_size", "ns_steps"]
    assert created.space.parameters[4].conditions is not None

    batch = worker.trials.suggest(created.id, "w-1", count=2)
    assert (len(batch.trials), batch.study_state) == (2, "active")
    first, second = batch.trials
    assert (first.state, first.worker_id, first.attempt) == ("active", "w-1", 1)
    assert isinstance(first.params["layers"], int)

    beat = worker.trials.heartbeat(first.id, "w-1")
    assert beat.lease_expires_at > datetime.now(UTC)
    assert worker.trials.report(first.id, "w-1", 3, {"val_loss": 2.0}, 0.5).should_stop is False
    done = worker.trials.complete(first.id, "w-1", {"val_loss": 1.5}, {"gpu_seconds": 2.0})
    assert (done.state, done.value("val_loss")) == ("completed", 1.5)
    assert [(m.step, m.metrics) for m in done.measurements] == [(3, {"val_loss": 2.0})]
    assert done.finished_at is not None

    requeued = worker.trials.fail(second.id, "w-1", "OOM", retry=True)
    assert (requeued.state, requeued.error) == ("requested", "OOM")
    again = worker.trials.suggest(created.id, "w-1").trials[0]
    assert (again.id, again.attempt) == (second.id, 2)
    assert worker.trials.infeasible(again.id, "w-1", "diverged").state == "infeasible"

    with pytest.raises(ProblemError) as caught:
        worker.trials.complete(again.id, "w-1", {"val_loss": 1.0})
    assert caught.value.status == 409

    counts = client.studies.get(created.id).trial_counts
    assert (counts.get("completed"), counts.get("infeasible")) == (1, 1)
    assert [t.id for t in client.studies.best(created.id)] == [first.id]


def test_pages_and_tokens_of_the_real_service(client: HPOClient) -> None:
    sid = client.studies.create(study(family="sdk-pages")).id
    imported = client.trials.add_batch(
        sid,
        [
            {"params": params(lr=0.001 * (k + 1)), "result": {"metrics": {"val_loss": 5.0 - k}}}
            for k in range(5)
        ],
    )
    assert all(isinstance(t, Trial) and t.state == "completed" for t in imported)
    client.trials.add(sid, params(lr=0.02))

    page = client.trials.list(sid, page_size=2)
    assert (len(page.items), page.next_page_token is not None) == (2, True)
    numbers = [t.number for t in client.trials.iter(sid, page_size=2)]
    assert numbers == [0, 1, 2, 3, 4, 5]
    best_first = client.trials.iter(sid, state="completed", order_by="value", page_size=2)
    assert [t.number for t in best_first] == [4, 3, 2, 1, 0]

    other = client.studies.create(study(family="sdk-pages")).id
    paused = client.studies.update(other, state="paused", metadata={"why": "test"})
    assert (paused.state, paused.metadata) == ("paused", {"why": "test"})
    listed = [s.id for s in client.studies.iter(family="sdk-pages", page_size=1)]
    assert listed == [sid, other]
    assert [s.id for s in client.studies.iter(family="sdk-pages", state="paused")] == [other]


def test_extrapolate_parses(client: HPOClient) -> None:
    s = client.studies.create(
        {
            "name": "mup",
            "objective": {"metric": "val_loss"},
            "space": MUP_SPACE,
            "algorithm": "random",
            "scale": SCALE,
        }
    )
    assert s.scale is not None
    client.trials.add(s.id, {"lr.hidden": 0.01, "dropout": 0.1}, {"val_loss": 1.0})
    out = client.studies.extrapolate(s.id, {"width": 1024})
    assert out.multipliers["width"] == 4.0
    assert out.params["lr.hidden"] == pytest.approx(0.0025)
    assert {r.param for r in out.rules} >= {"lr.hidden", "dropout"}


def test_rungs_parse(client: HPOClient) -> None:
    s = client.studies.create(
        {
            "name": "completep",
            "family": "sdk-rungs",
            "objective": {"metric": "val_loss"},
            "space": {
                "parameters": [
                    {"name": "lr", "type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
                    {"name": "dropout", "type": "float", "low": 0.0, "high": 0.5},
                ]
            },
            "algorithm": "random",
            "scale": {**SCALE, "parameterization": "completep"},
        }
    )
    client.trials.add(s.id, {"lr": 0.01, "dropout": 0.1}, {"val_loss": 1.0})
    made = client.studies.rungs(s.id, {"width": 2048, "depth": 16}, replicates=1)
    assert all(isinstance(r, Study) for r in made)
    assert [(r.scale or {})["proxy"]["depth"] for r in made] == [4, 8, 16]
    assert [(r.scale or {})["proxy"]["width"] for r in made] == [512] * 3
    assert [sum(r.trial_counts.values()) for r in made] == [7] * 3
    with pytest.raises(ProblemError) as err:
        client.studies.rungs(s.id, {"depth": 2})
    assert err.value.status == 422
