"""Dashboard fixtures: log in through the real form, and a study with history and scale."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from hpo_service.client import HPOClient
from hpo_service.db.database import Database
from tests.builders import params, study


@pytest.fixture(autouse=True)
def _empty_audit_log(db: Database) -> Iterator[None]:
    yield
    with db.write() as session:
        session.execute(text("DELETE FROM audit_log"))


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def login(app_client: TestClient, key: str) -> str:
    """Log in with the form; returns the page's CSRF token for later forms."""
    form = app_client.get("/ui/login")
    r = app_client.post(
        "/ui/login", data={"key": key, "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/"
    page = app_client.get("/ui/")
    assert page.status_code == 200
    return csrf_of(page.text)


def make_study(client: HPOClient, worker: HPOClient, *, name: str = "proxy-w256") -> str:
    """A study with completed, failed, active and queued trials."""
    sid = client.create_study(study(name=name, family="gpt", max_trials=20))["id"]
    for i, t in enumerate(worker.suggest(sid, "w1", 6)["trials"]):
        worker.report(t["id"], "w1", 1, {"val_loss": 3.0 - 0.1 * i})
        if i == 5:
            worker.fail(t["id"], "w1", "diverged")
        else:
            worker.complete(t["id"], "w1", {"val_loss": 2.0 - 0.2 * i + 0.05 * (i % 2)})
    worker.suggest(sid, "w9", 1)
    client.add_trial(sid, params(lr=2e-3))
    return sid


SCALE_SPACE = {
    "parameters": [
        {"name": "lr.hidden", "type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        {"name": "init_std", "type": "float", "low": 0.001, "high": 0.1, "scale": "log"},
        {"name": "warmup_frac", "type": "float", "low": 0.0, "high": 0.2},
    ]
}


def make_scaled_study(client: HPOClient) -> str:
    """A µP study with imported results, so extrapolation has a best trial."""
    sid = client.create_study(
        {
            "name": "mup-proxy",
            "family": "gpt-mup",
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "space": SCALE_SPACE,
            "algorithm": "random",
            "scale": {
                "parameterization": "mup",
                "proxy": {"width": 256, "depth": 4, "batch_size": 32, "tokens": 20000000},
            },
        }
    )["id"]
    for i in range(4):
        client.add_trial(
            sid,
            {"lr.hidden": 1e-3 * (i + 1), "init_std": 0.02, "warmup_frac": 0.05},
            {"val_loss": 1.0 + abs(i - 1) * 0.1},
        )
    return sid
