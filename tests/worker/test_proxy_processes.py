"""Two real `hpo worker --proxy mlp` processes train a µP study of eight tiny MLP trials."""

from __future__ import annotations

import pytest

from tests.worker.conftest import Server, Workers, clean_env

pytestmark = pytest.mark.slow

SMALL_MLP = {"width": 32, "depth": 2, "batch_size": 32, "tokens": 32 * 30}


def test_two_proxy_worker_processes_finish_eight_trials(
    short_lease_server: Server, workers: Workers
) -> None:
    server = short_lease_server
    key = server.worker_key()
    study = server.api(
        "POST",
        "/v1/studies",
        json={
            "name": "mlp-proxy",
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "space": {
                "parameters": [
                    {"name": "lr", "type": "float", "low": 1e-3, "high": 3e-2, "scale": "log"}
                ]
            },
            "algorithm": "sobol",
            "seed": 5,
            "max_trials": 8,
            "scale": {"parameterization": "mup", "proxy": SMALL_MLP},
        },
    )["id"]
    procs = [
        workers.launch(
            server,
            key,
            study,
            "--proxy",
            "mlp",
            worker_id=name,
            env=clean_env(OMP_NUM_THREADS="1"),
            entry="hpo_service",
        )
        for name in ("pa", "pb")
    ]
    for p in procs:
        assert workers.wait(p, 240) == 0, workers.logs()
    trials = server.trials(study)
    assert len(trials) == 8
    assert {t["state"] for t in trials} == {"completed"}
    assert {t["worker_id"] for t in trials} == {"pa", "pb"}
    for t in trials:
        assert t["result"]["metrics"]["val_loss"] > 0
        assert t["measurements"], "train-loss curve reported as measurements"
        assert t["cost"]["wall_seconds"] > 0
