from __future__ import annotations

import math

import pytest

from hpo_service.client import HPOClient, ProblemError
from tests.builders import params, study

PROBLEM = "https://hpo-service.dev/problems/"


@pytest.fixture
def sid(client: HPOClient) -> str:
    return client.create_study(study(max_trials=10))["id"]


def lease(worker: HPOClient, sid: str, worker_id: str = "w1", count: int = 1) -> list[dict]:
    return worker.suggest(sid, worker_id, count)["trials"]


def test_suggestions_lease_new_trials(worker: HPOClient, sid: str, client: HPOClient) -> None:
    answer = worker.suggest(sid, "w1", 3)
    assert answer["study_state"] == "active"
    trials = answer["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    for t in trials:
        assert t["state"] == "active"
        assert t["worker_id"] == "w1"
        assert t["attempt"] == 1
        assert t["source"] == "engine"
        assert t["lease_expires_at"] is not None
        assert t["started_at"] is not None
        assert 1e-5 <= t["params"]["lr"] <= 1e-1
        assert t["params"]["batch_size"] in (16, 32, 64)
        assert ("ns_steps" in t["params"]) == (t["params"]["optimizer"] == "muon")
    assert client.get_study(sid)["trial_counts"]["active"] == 3


def test_restarted_worker_gets_its_trials_back_first(worker: HPOClient, sid: str) -> None:
    first = lease(worker, sid, "w1", 2)
    again = worker.suggest(sid, "w1", 3)["trials"]
    assert [t["id"] for t in again[:2]] == [t["id"] for t in first]
    assert again[2]["number"] == 2


def test_queued_user_trials_come_before_new_ones(
    worker: HPOClient, client: HPOClient, sid: str
) -> None:
    queued = client.add_trial(sid, params(lr=0.01))
    assert queued["state"] == "requested"
    assert queued["attempt"] == 0
    assert queued["source"] == "user"
    got = lease(worker, sid, "w1", 2)
    assert got[0]["id"] == queued["id"]
    assert got[0]["params"] == params(lr=0.01)
    assert got[0]["attempt"] == 1
    assert got[1]["source"] == "engine"


def test_max_trials_caps_engine_trials_only(worker: HPOClient, client: HPOClient) -> None:
    s = client.create_study(study(max_trials=2))
    assert len(lease(worker, s["id"], "w1", 5)) == 2
    assert lease(worker, s["id"], "w2", 1) == []
    client.add_trial(s["id"], params())
    assert len(lease(worker, s["id"], "w2", 3)) == 1  # queued user trials are still handed out


def test_paused_study_hands_out_nothing(worker: HPOClient, client: HPOClient, sid: str) -> None:
    client.update_study(sid, state="paused")
    answer = worker.suggest(sid, "w1", 2)
    assert answer == {"trials": [], "study_state": "paused"}


def test_complete_flow_and_measurements(worker: HPOClient, client: HPOClient, sid: str) -> None:
    t = lease(worker, sid)[0]
    assert (
        worker.report(t["id"], "w1", 10, {"val_loss": 1.5, "train_loss": 1.7}, elapsed_s=2.0)
        is False
    )
    assert worker.report(t["id"], "w1", 20, {"val_loss": 1.2}) is False
    hb = worker.heartbeat(t["id"], "w1")
    assert hb["should_stop"] is False
    assert hb["lease_expires_at"] >= t["lease_expires_at"]
    done = worker.complete(t["id"], "w1", {"val_loss": 1.1, "acc": 0.5}, {"gpu_seconds": 3.5})
    assert done["state"] == "completed"
    assert done["result"] == {"metrics": {"val_loss": 1.1, "acc": 0.5}}
    assert done["cost"] == {"gpu_seconds": 3.5}
    assert done["lease_expires_at"] is None
    assert done["finished_at"] is not None
    assert [m["step"] for m in done["measurements"]] == [10, 20]
    assert done["measurements"][0]["metrics"] == {"val_loss": 1.5, "train_loss": 1.7}
    assert done["measurements"][0]["elapsed_s"] == 2.0
    assert client.best(sid)[0]["id"] == t["id"]


def test_complete_is_idempotent_and_conflicts_on_difference(worker: HPOClient, sid: str) -> None:
    t = lease(worker, sid)[0]
    a = worker.complete(t["id"], "w1", {"val_loss": 0.5})
    b = worker.complete(t["id"], "w1", {"val_loss": 0.5})
    assert a == b
    with pytest.raises(ProblemError) as err:
        worker.complete(t["id"], "w1", {"val_loss": 0.6})
    assert err.value.status == 409
    assert err.value.slug == "completion-conflict"
    assert worker.get_trial(t["id"])["result"] == {"metrics": {"val_loss": 0.5}}


def test_objective_must_be_present_and_finite(
    worker: HPOClient, app_client, keys, sid: str
) -> None:
    t = lease(worker, sid)[0]
    with pytest.raises(ProblemError) as err:
        worker.complete(t["id"], "w1", {"acc": 0.5})
    assert err.value.status == 422
    assert err.value.errors == [
        {
            "loc": ["body", "metrics", "val_loss"],
            "msg": "the objective metric 'val_loss' is missing",
        }
    ]
    headers = {"Authorization": f"Bearer {keys.worker}", "content-type": "application/json"}
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"worker_id": "w1", "metrics": {"val_loss": ' + literal + b"}}"
        r = app_client.post(f"/v1/trials/{t['id']}/complete", content=body, headers=headers)
        assert r.status_code == 422, r.text
        assert r.json()["type"] == PROBLEM + "validation-error"
    assert worker.get_trial(t["id"])["state"] == "active"


def test_measurement_rejects_non_finite(worker: HPOClient, app_client, keys, sid: str) -> None:
    t = lease(worker, sid)[0]
    headers = {"Authorization": f"Bearer {keys.worker}", "content-type": "application/json"}
    body = b'{"worker_id": "w1", "step": 1, "metrics": {"val_loss": NaN}}'
    r = app_client.post(f"/v1/trials/{t['id']}/measurements", content=body, headers=headers)
    assert r.status_code == 422
    assert worker.get_trial(t["id"])["measurements"] == []


def test_wrong_worker_gets_409(worker: HPOClient, sid: str) -> None:
    t = lease(worker, sid)[0]
    for call in (
        lambda: worker.heartbeat(t["id"], "intruder"),
        lambda: worker.report(t["id"], "intruder", 1, {"val_loss": 1.0}),
        lambda: worker.complete(t["id"], "intruder", {"val_loss": 1.0}),
        lambda: worker.fail(t["id"], "intruder", "boom"),
        lambda: worker.infeasible(t["id"], "intruder", "nan"),
    ):
        with pytest.raises(ProblemError) as err:
            call()
        assert err.value.status == 409
        assert err.value.slug == "trial-not-leased"
    after = worker.get_trial(t["id"])
    assert after["state"] == "active"
    assert after["worker_id"] == "w1"
    assert after["measurements"] == []


def test_queued_trial_cannot_be_reported(worker: HPOClient, client: HPOClient, sid: str) -> None:
    queued = client.add_trial(sid, params())
    with pytest.raises(ProblemError) as err:
        worker.complete(queued["id"], "w1", {"val_loss": 1.0})
    assert err.value.slug == "trial-not-leased"


def test_fail_with_retry_requeues_then_fails(worker: HPOClient, client: HPOClient) -> None:
    s = client.create_study(study(max_attempts=2))
    t = lease(worker, s["id"])[0]
    requeued = worker.fail(t["id"], "w1", "CUDA OOM", retry=True)
    assert requeued["state"] == "requested"
    assert requeued["attempt"] == 2
    assert requeued["worker_id"] is None
    assert requeued["error"] == "CUDA OOM"
    again = lease(worker, s["id"], "w2")[0]
    assert again["id"] == t["id"]
    assert again["attempt"] == 2
    assert again["params"] == t["params"]
    final = worker.fail(t["id"], "w2", "CUDA OOM again", retry=True)
    assert final["state"] == "failed"
    assert "gave up after 2 attempts" in final["error"]


def test_fail_without_retry_and_infeasible(worker: HPOClient, sid: str) -> None:
    a, b = lease(worker, sid, "w1", 2)
    failed = worker.fail(a["id"], "w1", "segfault")
    assert failed["state"] == "failed"
    assert failed["error"] == "segfault"
    assert worker.fail(a["id"], "w1", "segfault") == failed  # idempotent
    inf = worker.infeasible(b["id"], "w1", "loss diverged")
    assert inf["state"] == "infeasible"
    assert inf["error"] == "loss diverged"
    with pytest.raises(ProblemError) as err:
        worker.complete(b["id"], "w1", {"val_loss": 1.0})
    assert err.value.status == 409


def test_measurements_are_kept_through_requeue(worker: HPOClient, sid: str) -> None:
    t = lease(worker, sid)[0]
    worker.report(t["id"], "w1", 5, {"val_loss": 2.0})
    worker.fail(t["id"], "w1", "preempted", retry=True)
    assert [m["step"] for m in worker.get_trial(t["id"])["measurements"]] == [5]


def test_add_trial_imports_completed(client: HPOClient, sid: str) -> None:
    t = client.add_trial(sid, params(), {"val_loss": 0.3}, {"origin": "paper"})
    assert t["state"] == "completed"
    assert t["result"] == {"metrics": {"val_loss": 0.3}}
    assert t["metadata"] == {"origin": "paper"}
    assert t["source"] == "user"


def test_add_trial_outside_space_is_422(client: HPOClient, sid: str) -> None:
    with pytest.raises(ProblemError) as err:
        client.add_trial(sid, params(lr=5.0, batch_size=48, colour="red"))
    assert err.value.status == 422
    assert sorted(map(tuple, (e["loc"] for e in err.value.errors))) == [
        ("body", "params", "batch_size"),
        ("body", "params", "colour"),
        ("body", "params", "lr"),
    ]
    assert client.get_study(sid)["trial_counts"]["requested"] == 0


def test_batch_is_all_or_nothing(client: HPOClient, sid: str) -> None:
    with pytest.raises(ProblemError) as err:
        client.add_trials(sid, [{"params": params()}, {"params": params(optimizer="sgd")}])
    assert err.value.errors[0]["loc"] == ["body", "trials", 1, "params", "optimizer"]
    assert client.list_trials(sid)["items"] == []
    created = client.add_trials(
        sid,
        [
            {"params": params()},
            {"params": params(lr=0.02), "result": {"metrics": {"val_loss": 1.0}}},
        ],
    )
    assert [t["state"] for t in created] == ["requested", "completed"]
    assert [t["number"] for t in created] == [0, 1]


def test_list_trials_filters_order_and_pages(
    client: HPOClient, worker: HPOClient, sid: str
) -> None:
    for i, loss in enumerate([0.5, 0.2, 0.9, 0.1]):
        client.add_trial(sid, params(lr=10 ** (-4 + 0.1 * i)), {"val_loss": loss})
    lease(worker, sid, "w9", 2)
    by_value = client.list_trials(sid, order_by="value")["items"]
    assert [t["result"]["metrics"]["val_loss"] for t in by_value[:4]] == [0.1, 0.2, 0.5, 0.9]
    assert [t["state"] for t in by_value[4:]] == ["active", "active"]
    assert len(client.list_trials(sid, state="active")["items"]) == 2
    assert len(client.list_trials(sid, worker_id="w9")["items"]) == 2
    for order in ("number", "value"):
        seen, token = [], None
        while True:
            page = client.list_trials(sid, order_by=order, page_size=4, page_token=token)
            seen += [t["number"] for t in page["items"]]
            token = page["next_page_token"]
            if token is None:
                break
        assert sorted(seen) == list(range(6)), order


def test_trial_ids_unknown_or_malformed(worker: HPOClient) -> None:
    for tid in ("tr_ffffffffffffffffffffffff", "garbage", "x" * 300):
        with pytest.raises(ProblemError) as err:
            worker.heartbeat(tid, "w1")
        assert err.value.status == 404


def test_suggestion_request_validation(worker: HPOClient, sid: str) -> None:
    for body in ({"worker_id": "", "count": 1}, {"worker_id": "w", "count": 0}, {"count": 1}):
        with pytest.raises(ProblemError) as err:
            worker.request("POST", f"/v1/studies/{sid}/suggestions", json=body)
        assert err.value.status == 422


def test_values_are_finite_floats_in_responses(worker: HPOClient, sid: str) -> None:
    for t in lease(worker, sid, "w1", 5):
        assert math.isfinite(t["params"]["lr"])
