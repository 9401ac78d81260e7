"""Four `study.optimize` processes on one shared Optuna study, one of them killed with -9.

They share an Optuna SQLite storage and must share one service study (their creations
race, and the Idempotency-Key settles it). The victim holds a leased trial when it is
killed; the server's 2 s lease expires, and the same point is served to a trial of
another process: the service loses no trial with the process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution

from hpo_service.client import HPOClient
from hpo_service.integrations.optuna import STUDY_ATTR_PREFIX, TRIAL_ATTR
from tests.integrations.conftest import Service
from tests.worker.conftest import clean_env, wait_for

pytestmark = pytest.mark.slow

OPTIMIZE = r"""
import json, pathlib, sys, time
import optuna
from hpo_service.integrations.optuna import TRIAL_ATTR, HPOServiceSampler

url, study_name, server, key, role, workdir = sys.argv[1:7]
here = pathlib.Path(workdir)
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
sampler = HPOServiceSampler(server, key)
study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)

def objective(trial):
    x = trial.suggest_float("x", -3, 3)
    y = trial.suggest_float("y", -3, 3)
    lease = study._storage.get_trial_system_attrs(trial._trial_id).get(TRIAL_ATTR)
    if role == "victim" and lease is not None:
        (here / "victim.json").write_text(json.dumps({**lease, "x": x, "y": y}))
        time.sleep(600)  # killed here, holding the lease
    time.sleep(0.1)
    return (x - 1) ** 2 + (y + 1) ** 2

def stop_when_told(study, trial):
    if (here / "stop").exists():
        study.stop()

study.optimize(objective, n_trials=300, callbacks=[stop_when_told])
sampler.close()
"""


def test_a_killed_process_loses_no_trial(short_lease_service: Service, tmp_path: Path) -> None:
    service = short_lease_service
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    name = f"shared-{service.backend}"
    study = optuna.create_study(study_name=name, storage=url)
    space = {"x": FloatDistribution(-3, 3), "y": FloatDistribution(-3, 3)}
    # A finished trial first: every process has a relative space, and leases, at once.
    study.add_trial(
        optuna.trial.create_trial(params={"x": 0.0, "y": 0.0}, distributions=space, value=2.0)
    )
    script = tmp_path / "optimize.py"
    script.write_text(OPTIMIZE)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for role in ["victim", "a", "b", "c"]:
            with (tmp_path / f"{role}.log").open("wb") as log:
                argv = [sys.executable, str(script), url, name, service.url, service.key]
                procs.append(
                    subprocess.Popen(
                        [*argv, role, str(tmp_path)],
                        env=clean_env(),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=tmp_path,
                    )
                )
        marker = tmp_path / "victim.json"
        wait_for(marker.exists, 120, "the victim to hold a lease")
        victim = json.loads(marker.read_text())
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(timeout=30)

        with HPOClient(service.url, service.key) as client:
            requeued = wait_for(
                lambda: (t := client.trials.get(victim["trial"])).state == "completed" and t,
                120,
                "the victim's trial to be served again and completed",
            )
            (tmp_path / "stop").touch()
            for proc in procs[1:]:
                assert proc.wait(timeout=120) == 0, _logs(tmp_path)
            trials = list(client.trials.iter(victim["study"]))
            studies = [s.id for s in client.studies.iter(name=f"optuna:{name}")]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    study = optuna.load_study(study_name=name, storage=url)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert [v for k, v in attrs.items() if k.startswith(STUDY_ATTR_PREFIX)] == [victim["study"]]
    assert studies == [victim["study"]]  # four racing processes, one service study
    assert requeued.attempt == 2
    assert requeued.worker_id != victim["worker_id"]
    assert (requeued.params["x"], requeued.params["y"]) == (victim["x"], victim["y"])
    rerun = [
        t for t in study.trials if t.system_attrs.get(TRIAL_ATTR, {}).get("trial") == requeued.id
    ]
    assert [t.params for t in rerun if t.state.is_finished()] == [
        {"x": victim["x"], "y": victim["y"]}
    ]
    # No trial is lost: every lease ended, and every finished Optuna trial reached the
    # service, through its lease or, where that lease ran out first (a loaded machine can
    # miss a 2 s lease), as a user trial; a point whose lease ran out is queued again.
    detail = [(t.number, t.state, t.attempt, t.worker_id, t.source) for t in trials]
    assert {t.state for t in trials} <= {"completed", "requested"}, detail
    assert all(t.attempt >= 2 for t in trials if t.state == "requested"), detail
    completed_by = {
        int(t.worker_id.removeprefix("optuna-")): t
        for t in trials
        if t.state == "completed" and t.source != "user" and t.worker_id
    }
    users = {int(t.metadata["optuna_trial"]) for t in trials if t.source == "user"}
    finished = [t for t in study.trials if t.state.is_finished()]
    for t in finished:
        if t.number == 0:
            assert 0 in users  # the seed trial, imported once by the racing creators
            continue
        ran = completed_by.get(t.number)
        assert (ran is not None and ran.params == t.params) or t.number in users, (
            t.number,
            detail,
        )
    assert len(finished) >= 5


def _logs(tmp: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp.glob("*.log")))
