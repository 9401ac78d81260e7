"""A real `hpo serve` and real `hpo worker` processes running a small command per trial."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.local_server import running
from tests.worker.conftest import Server, Workers, wait_for

pytestmark = pytest.mark.slow


def _expected(params: dict[str, float]) -> float:
    return (params["lr"] * 100 - 1) ** 2 + 0.1 * params["layers"]


def _active(server: Server, study: str) -> list[dict]:
    return [t for t in server.trials(study) if t["state"] == "active"]


def test_two_workers_finish_a_study(short_lease_server: Server, workers: Workers) -> None:
    server = short_lease_server
    key = server.worker_key()
    study = server.create_study(max_trials=8)
    a = workers.start(server, key, study, "ok", worker_id="wa")
    b = workers.start(server, key, study, "ok", worker_id="wb")
    assert workers.wait(a, 90) == 0, workers.logs()
    assert workers.wait(b, 90) == 0, workers.logs()
    trials = server.trials(study)
    assert len(trials) == 8
    for t in trials:
        assert t["state"] == "completed", t
        assert t["result"]["metrics"]["val_loss"] == pytest.approx(_expected(t["params"]))
        assert [m["step"] for m in t["measurements"]] == [1, 2, 3]
        assert t["cost"]["wall_seconds"] > 0
    final = server.api("GET", f"/v1/studies/{study}")
    assert final["trial_counts"].get("completed") == 8
    assert final["state"] == "completed"  # by the last finish, which is why they exited


def test_worker_exits_when_its_study_is_completed(
    sqlite_server: Server, workers: Workers, tmp_path: Path
) -> None:
    """No budget to run out: only the study's completion can end this worker, at once.

    Completing the study asks the running trial to stop; the worker stops its command,
    reports what it has (no objective yet: a failure), finds the study completed and
    exits 0, long before the command's two minutes are up.
    """
    server = sqlite_server
    key = server.worker_key()
    study = server.create_study(max_trials=None)
    w = workers.start(server, key, study, "slow-first", worker_id="endless")
    [trial] = wait_for(lambda: _active(server, study), 30, "the trial to be leased")
    pid_file = tmp_path / f"pid-{trial['id']}-1"
    wait_for(pid_file.exists, 30, "the command to start")
    completed = server.api("PATCH", f"/v1/studies/{study}", json={"state": "completed"})
    assert completed["state"] == "completed"
    assert workers.wait(w, 30) == 0, workers.logs()
    final = server.api("GET", f"/v1/trials/{trial['id']}")
    assert final["state"] == "failed"
    assert final["metadata"]["stopped_early"] == "the study was completed"
    assert "stopped early" in final["error"]
    assert server.api("GET", f"/v1/studies/{study}")["state"] == "completed"
    assert len(server.trials(study)) == 1
    with pytest.raises(ProcessLookupError):  # the command was stopped too
        os.kill(int(pid_file.read_text()), 0)


def test_killed_worker_trial_is_finished_by_another(
    short_lease_server: Server, workers: Workers, tmp_path: Path
) -> None:
    server = short_lease_server
    key = server.worker_key()
    study = server.create_study(max_trials=1)
    a = workers.start(server, key, study, "slow-first", worker_id="victim")
    [trial] = wait_for(lambda: _active(server, study), 30, "the trial to be leased")
    pid_file = tmp_path / f"pid-{trial['id']}-1"
    command = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, "the command"))
    b = workers.start(server, key, study, "slow-first", worker_id="rescuer")
    a.kill()  # kill -9: no release, no heartbeat; only the lease expiry can free the trial
    a.wait()
    # nor can it stop its command, which must not train on for a trial it lost
    wait_for(lambda: not running(command), 5, "the command to die with its worker")
    assert workers.wait(b, 60) == 0, workers.logs()
    final = server.api("GET", f"/v1/trials/{trial['id']}")
    assert final["state"] == "completed"
    assert final["attempt"] == 2
    assert final["worker_id"] == "rescuer"


def test_sigterm_releases_the_trial(
    sqlite_server: Server, workers: Workers, tmp_path: Path
) -> None:
    server = sqlite_server
    key = server.worker_key()
    study = server.create_study(max_trials=1)
    w = workers.start(server, key, study, "slow-first", worker_id="polite")
    [trial] = wait_for(lambda: _active(server, study), 30, "the trial to be leased")
    pid_file = tmp_path / f"pid-{trial['id']}-1"
    wait_for(pid_file.exists, 30, "the command to start")
    w.send_signal(signal.SIGTERM)
    assert workers.wait(w, 30) == 0, workers.logs()
    final = server.api("GET", f"/v1/trials/{trial['id']}")
    assert final["state"] == "requested"
    assert final["worker_id"] is None or final["lease_expires_at"] is None
    assert final["attempt"] == 2
    with pytest.raises(ProcessLookupError):  # the command was stopped too
        os.kill(int(pid_file.read_text()), 0)
    assert "action=release" in workers.log(w)


def test_flaky_command_is_retried(sqlite_server: Server, workers: Workers) -> None:
    server = sqlite_server
    key = server.worker_key()
    study = server.create_study(max_trials=1)
    w = workers.start(server, key, study, "flaky", worker_id="flaky")
    assert workers.wait(w, 60) == 0, workers.logs()
    [trial] = server.trials(study)
    assert trial["state"] == "completed"
    assert trial["attempt"] == 2
    log = workers.log(w)
    assert "action=fail" in log
    assert "command exited with code 3" in log
    assert "action=complete" in log


def test_server_outage_does_not_lose_the_completion(
    sqlite_server: Server, workers: Workers, tmp_path: Path
) -> None:
    server = sqlite_server
    key = server.worker_key()
    study = server.create_study(max_trials=1)
    w = workers.start(server, key, study, "wait-go", worker_id="patient")
    [trial] = wait_for(lambda: _active(server, study), 30, "the trial to be leased")
    wait_for((tmp_path / f"pid-{trial['id']}-1").exists, 30, "the command to start")
    server.kill()
    (tmp_path / "go").write_text("")  # the run finishes while the service is down
    wait_for(lambda: "op=complete" in workers.log(w), 60, "the worker to retry its completion")
    time.sleep(1.0)
    server.start()
    assert workers.wait(w, 90) == 0, workers.logs()
    final = server.api("GET", f"/v1/trials/{trial['id']}")
    assert final["state"] == "completed"
    assert final["attempt"] == 1
    assert final["result"]["metrics"]["val_loss"] == pytest.approx(_expected(final["params"]))
    assert final["cost"]["flops"] == 1.0
    assert workers.log(w).count("event=trial.done") == 1
