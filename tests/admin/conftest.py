"""Fixtures of the admin tests: a small history across two tenants, and admin headers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hpo_service.client import HPOClient
from tests.builders import params, study
from tests.conftest import Keys


@pytest.fixture
def admin_headers(keys: Keys) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.admin}"}


@dataclass(frozen=True)
class History:
    acme_study: str
    globex_study: str
    completed: list[str]
    active: str
    failed: str
    queued: str
    imported: list[str]


@pytest.fixture
def history(client: HPOClient, worker: HPOClient, outsider: HPOClient) -> History:
    """acme: 2 completed (w1, with measurements), 1 active (w2), 1 failed, 1 queued;
    globex: 2 imported completed trials in another family."""
    acme = client.create_study(study(family="gpt", max_trials=10))["id"]
    completed = []
    for i, t in enumerate(worker.suggest(acme, "w1", 2)["trials"]):
        worker.report(t["id"], "w1", step=10, metrics={"val_loss": 2.0 - i}, elapsed_s=1.5)
        worker.complete(t["id"], "w1", {"val_loss": 1.0 - 0.5 * i}, cost={"gpu_seconds": 3})
        completed.append(t["id"])
    active = worker.suggest(acme, "w2", 1)["trials"][0]["id"]
    failed = worker.suggest(acme, "w3", 1)["trials"][0]["id"]
    worker.fail(failed, "w3", "out of memory")
    queued = client.add_trial(acme, params(lr=3e-3))["id"]
    globex = outsider.create_study(study(family="bert", name="other"))["id"]
    imported = [
        outsider.add_trial(globex, params(lr=1e-4 * (i + 1)), {"val_loss": 0.3 + i, "acc": 0.9})[
            "id"
        ]
        for i in range(2)
    ]
    return History(acme, globex, completed, active, failed, queued, imported)
