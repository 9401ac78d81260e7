"""Study states over HTTP: the PATCH state machine, completion by budget, sophia refused.

Plain HTTP through the app (no SDK), on SQLite and PostgreSQL (the ``db`` fixture).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.domain import Principal, Role
from hpo_service.services import leases, trials
from tests.builders import params, study
from tests.conftest import Keys
from tests.dashboard.conftest import login

PROBLEM = "https://hpo-service.dev/problems/"


class Api:
    """One key's calls to the app; every answer's status is checked by the caller."""

    def __init__(self, app: TestClient, key: str) -> None:
        self.app = app
        self.headers = {"Authorization": f"Bearer {key}"}

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        r = self.app.request(method, path, json=body, headers=self.headers)
        assert r.status_code == expect, r.text
        return r.json() if r.content else None

    def create(self, **overrides: Any) -> dict[str, Any]:
        created: dict[str, Any] = self.call("POST", "/v1/studies", study(**overrides), 201)
        return created

    def study(self, sid: str) -> dict[str, Any]:
        got: dict[str, Any] = self.call("GET", f"/v1/studies/{sid}")
        return got

    def patch(self, sid: str, body: dict[str, Any], expect: int = 200) -> Any:
        return self.call("PATCH", f"/v1/studies/{sid}", body, expect)

    def lease(self, sid: str, count: int, worker_id: str = "w1") -> dict[str, Any]:
        body = {"worker_id": worker_id, "count": count}
        answer: dict[str, Any] = self.call("POST", f"/v1/studies/{sid}/suggestions", body)
        return answer

    def finish(self, trial: dict[str, Any], how: str, **body: Any) -> dict[str, Any]:
        body.setdefault("worker_id", trial["worker_id"])
        done: dict[str, Any] = self.call("POST", f"/v1/trials/{trial['id']}/{how}", body)
        return done


@pytest.fixture
def client_api(app_client: TestClient, keys: Keys) -> Api:
    return Api(app_client, keys.client)


@pytest.fixture
def worker_api(app_client: TestClient, keys: Keys) -> Api:
    return Api(app_client, keys.worker)


def _complete(api: Api, trial: dict[str, Any], value: float = 1.0) -> dict[str, Any]:
    return api.finish(trial, "complete", metrics={"val_loss": value})


def _assert_refused(api: Api, sid: str, body: dict[str, Any]) -> None:
    """The PATCH is a 409 invalid-state-transition problem and nothing stored changes."""
    before = api.study(sid)
    r = api.app.patch(f"/v1/studies/{sid}", json=body, headers=api.headers)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == PROBLEM + "invalid-state-transition"
    assert problem["status"] == 409
    after = api.study(sid)
    assert after == before


# -- the PATCH state machine ----------------------------------------------------------------


def test_pause_resume_and_complete(client_api: Api) -> None:
    sid = client_api.create()["id"]
    assert client_api.patch(sid, {"state": "paused"})["state"] == "paused"
    assert client_api.patch(sid, {"state": "paused"})["state"] == "paused"  # a repeat is fine
    assert client_api.patch(sid, {"state": "active"})["state"] == "active"
    assert client_api.patch(sid, {"state": "completed"})["state"] == "completed"
    assert client_api.patch(sid, {"state": "completed"})["state"] == "completed"
    paused = client_api.create()["id"]
    client_api.patch(paused, {"state": "paused"})
    assert client_api.patch(paused, {"state": "completed"})["state"] == "completed"


def test_completed_is_left_only_with_a_new_budget(client_api: Api, worker_api: Api) -> None:
    sid = client_api.create(max_trials=2, metadata={"owner": "ann"})["id"]
    for t in worker_api.lease(sid, 2)["trials"]:
        _complete(worker_api, t)
    assert client_api.study(sid)["state"] == "completed"
    _assert_refused(client_api, sid, {"state": "paused"})
    _assert_refused(client_api, sid, {"state": "paused", "metadata": {"x": 1}})
    _assert_refused(client_api, sid, {"state": "active"})
    _assert_refused(client_api, sid, {"state": "active", "metadata": {"x": 1}})
    _assert_refused(client_api, sid, {"state": "active", "max_trials": 2})  # no room in it
    # Raising the budget alone keeps the study completed: reopening is asked for.
    raised = client_api.patch(sid, {"max_trials": 3})
    assert (raised["state"], raised["max_trials"]) == ("completed", 3)
    reopened = client_api.patch(sid, {"state": "active", "max_trials": 4})
    assert (reopened["state"], reopened["max_trials"]) == ("active", 4)
    assert reopened["metadata"] == {"owner": "ann"}
    assert [t["number"] for t in worker_api.lease(sid, 5)["trials"]] == [2, 3]


def test_reopening_with_an_unlimited_budget(client_api: Api) -> None:
    sid = client_api.create()["id"]
    client_api.patch(sid, {"state": "completed"})
    _assert_refused(client_api, sid, {"state": "active"})
    reopened = client_api.patch(sid, {"state": "active", "max_trials": None})
    assert (reopened["state"], reopened["max_trials"]) == ("active", None)


def test_completing_stops_running_trials_and_keeps_queued_ones(
    client_api: Api, worker_api: Api
) -> None:
    sid = client_api.create()["id"]
    running = worker_api.lease(sid, 1)["trials"][0]
    queued = client_api.call("POST", f"/v1/studies/{sid}/trials", {"params": params()}, 201)
    done = client_api.patch(sid, {"state": "completed"})
    assert done["trial_counts"]["stopping"] == 1
    assert done["trial_counts"]["requested"] == 1
    beat = worker_api.call("POST", f"/v1/trials/{running['id']}/heartbeat", {"worker_id": "w1"})
    assert beat["should_stop"] is True
    partial = _complete(worker_api, running, 2.5)  # stopping → completed, partial result
    assert partial["state"] == "completed"
    assert partial["metadata"]["stopped_early"] == "the study was completed"
    assert client_api.call("GET", f"/v1/trials/{queued['id']}")["state"] == "requested"
    assert worker_api.lease(sid, 1) == {"trials": [], "study_state": "completed"}


# -- completion when the budget is spent ----------------------------------------------------


def test_the_last_finish_completes_the_study_everywhere(
    app_client: TestClient, keys: Keys, client_api: Api, worker_api: Api
) -> None:
    sid = client_api.create(max_trials=3)["id"]
    first, second, third = worker_api.lease(sid, 3)["trials"]
    _complete(worker_api, first)
    assert worker_api.lease(sid, 1, "w2") == {"trials": [], "study_state": "active"}
    worker_api.finish(second, "infeasible", reason="diverged")
    assert client_api.study(sid)["state"] == "active"
    worker_api.finish(third, "fail", error="oom", retry=False)
    got = client_api.study(sid)
    assert got["state"] == "completed"
    assert got["trial_counts"]["completed"] == 1
    listed = client_api.call("GET", "/v1/studies", None)["items"]
    assert [s["state"] for s in listed if s["id"] == sid] == ["completed"]
    assert worker_api.lease(sid, 1) == {"trials": [], "study_state": "completed"}
    login(app_client, keys.client)
    page = app_client.get(f"/ui/studies/{sid}").text
    assert 'class="state state-completed">completed</span></h1>' in page


def test_a_queued_user_trial_keeps_the_study_open(client_api: Api, worker_api: Api) -> None:
    sid = client_api.create(max_trials=1)["id"]
    [engine] = worker_api.lease(sid, 1)["trials"]
    client_api.call("POST", f"/v1/studies/{sid}/trials", {"params": params()}, 201)
    _complete(worker_api, engine)
    assert client_api.study(sid)["state"] == "active"  # the queued one is still handed out
    [user] = worker_api.lease(sid, 1)["trials"]
    assert user["source"] == "user"
    _complete(worker_api, user)
    assert client_api.study(sid)["state"] == "completed"


def test_retries_keep_it_open_until_attempts_run_out(client_api: Api, worker_api: Api) -> None:
    sid = client_api.create(max_trials=1, max_attempts=2)["id"]
    [t] = worker_api.lease(sid, 1)["trials"]
    assert worker_api.finish(t, "fail", error="flaky", retry=True)["state"] == "requested"
    assert client_api.study(sid)["state"] == "active"
    [again] = worker_api.lease(sid, 1)["trials"]
    assert worker_api.finish(again, "fail", error="flaky", retry=True)["state"] == "failed"
    assert client_api.study(sid)["state"] == "completed"


def test_an_expired_last_lease_completes_the_study(
    db: Database, client_api: Api, worker_api: Api
) -> None:
    sid = client_api.create(max_trials=1, max_attempts=1)["id"]
    worker_api.lease(sid, 1)
    assert leases.reclaim_expired(db, utcnow() + timedelta(hours=1)) == 1
    got = client_api.study(sid)
    assert got["trial_counts"]["failed"] == 1
    assert got["state"] == "completed"


def test_a_lowered_budget_completes_an_idle_study_at_once(client_api: Api, worker_api: Api) -> None:
    sid = client_api.create(max_trials=5)["id"]
    for t in worker_api.lease(sid, 2)["trials"]:
        _complete(worker_api, t)
    client_api.patch(sid, {"state": "paused"})
    lowered = client_api.patch(sid, {"max_trials": 2})
    assert lowered["state"] == "completed"


@pytest.mark.committed  # concurrent finishes race for the study's lock
@pytest.mark.parametrize("round_", range(5))
def test_last_trials_finishing_at_once_complete_the_study(
    db: Database, client_api: Api, worker_api: Api, round_: int
) -> None:
    """Each finish counts under the study's lock, so the last one to commit completes it.

    Without that lock, on PostgreSQL each finish would see the others still running (not
    yet committed) and none would complete the study; several rounds make that likely.
    """
    sid = client_api.create(max_trials=4)["id"]
    running = worker_api.lease(sid, 4)["trials"]
    me = Principal(key_id="k", role=Role.WORKER, tenant="acme")
    barrier = threading.Barrier(len(running))
    errors: list[BaseException] = []

    def finish(trial_id: str) -> None:
        try:
            barrier.wait()
            trials.complete_trial(
                db, me, trial_id, worker_id="w1", metrics={"val_loss": 1.0}, cost=None, now=utcnow()
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(t["id"],)) for t in running]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert client_api.study(sid)["state"] == "completed"


# -- scale: sophia ---------------------------------------------------------------------------


def test_sophia_is_refused_at_creation(client_api: Api) -> None:
    scale = {"parameterization": "mup", "optimizer": "sophia", "proxy": {"width": 256}}
    r = client_api.app.post("/v1/studies", json=study(scale=scale), headers=client_api.headers)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == PROBLEM + "unsupported-feature"
    [error] = problem["errors"]
    assert error["loc"] == ["body", "scale", "optimizer"]
    assert "sophia" in error["msg"]
    assert client_api.call("GET", "/v1/studies")["items"] == []
    lion = client_api.create(scale={**scale, "optimizer": "lion"})
    assert lion["scale"]["optimizer"] == "lion"
