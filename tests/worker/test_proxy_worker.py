"""The worker loop in proxy mode, in process, against the app on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from hpo_service.client import HPOClient
from hpo_service.worker.loop import Worker, WorkerConfig
from tests.conftest import Keys

# The worker's slot and heartbeat threads call the in-process app at once: reads and writes
# from several threads need their own connections (tests/isolation.py), so data commits.
pytestmark = pytest.mark.committed

SMALL_MLP = {"width": 32, "depth": 2, "batch_size": 32, "tokens": 32 * 20}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, int | None, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.hook: Any = None

    def emit(self, event: str, slot: int | None = None, **fields: Any) -> None:
        with self.lock:
            self.items.append((event, slot, fields))
        if self.hook is not None:
            self.hook(event, fields)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [f for e, _, f in self.items if e == event]


def _study(client: HPOClient, max_trials: int) -> str:
    body = {
        "name": "proxy-mlp",
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "space": {
            "parameters": [
                {"name": "lr", "type": "float", "low": 1e-3, "high": 3e-2, "scale": "log"}
            ]
        },
        "algorithm": "sobol",
        "seed": 1,
        "max_trials": max_trials,
        "scale": {"parameterization": "mup", "proxy": SMALL_MLP},
    }
    return str(client.create_study(body)["id"])


def _worker(
    app_client: TestClient, keys: Keys, study: str, events: Events, parallel: int
) -> Worker:
    config = WorkerConfig(
        server="http://test",
        key=keys.worker,
        study_id=study,
        worker_id="proxy-w",
        proxy="mlp",
        parallel=parallel,
        poll_min=0.05,
        poll_max=0.2,
    )
    return Worker(
        config, events, client_factory=lambda: HPOClient(api_key=keys.worker, http=app_client)
    )


def test_proxy_study_of_eight_trials_completes(
    client: HPOClient, app_client: TestClient, keys: Keys
) -> None:
    study = _study(client, max_trials=8)
    events = Events()
    assert _worker(app_client, keys, study, events, parallel=2).run() == 0
    trials = client.list_trials(study)["items"]
    assert len(trials) == 8
    assert {t["state"] for t in trials} == {"completed"}
    assert {t["worker_id"] for t in trials} <= {"proxy-w.0", "proxy-w.1"}
    for t in trials:
        assert t["result"]["metrics"]["val_loss"] > 0
        assert t["measurements"]
        assert "wall_seconds" in t["cost"]
    assert len(events.named("trial.done")) == 8


def test_shutdown_during_a_proxy_run_releases_the_trial(
    client: HPOClient, app_client: TestClient, keys: Keys
) -> None:
    study = _study(client, max_trials=1)
    events = Events()
    worker = _worker(app_client, keys, study, events, parallel=1)
    events.hook = lambda event, _f: (
        worker.request_shutdown("test") if event == "trial.step" else None
    )
    assert worker.run() == 0
    [trial] = client.list_trials(study)["items"]
    assert trial["state"] == "requested"
    assert trial["attempt"] == 2
    assert [f["action"] for f in events.named("trial.done")] == ["release"]


def test_unknown_proxy_is_a_configuration_error(
    client: HPOClient, app_client: TestClient, keys: Keys
) -> None:
    study = _study(client, max_trials=1)
    events = Events()
    config = WorkerConfig(
        server="http://test", key=keys.worker, study_id=study, worker_id="w", proxy="resnet"
    )
    worker = Worker(
        config, events, client_factory=lambda: HPOClient(api_key=keys.worker, http=app_client)
    )
    assert worker.run() == 2
    assert "unknown proxy" in events.named("worker.error")[0]["error"]


def test_bad_placeholder_is_a_configuration_error(
    client: HPOClient, app_client: TestClient, keys: Keys
) -> None:
    study = _study(client, max_trials=1)
    events = Events()
    config = WorkerConfig(
        server="http://test",
        key=keys.worker,
        study_id=study,
        worker_id="w",
        command=("echo", "{learning_rate}"),
    )
    worker = Worker(
        config, events, client_factory=lambda: HPOClient(api_key=keys.worker, http=app_client)
    )
    assert worker.run() == 2
    assert "learning_rate" in events.named("worker.error")[0]["error"]
