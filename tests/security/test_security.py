"""Security properties: tenant isolation on every route, auth throttling, no key leaks."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from hpo_service.api.app import create_app
from hpo_service.client import HPOClient
from tests.builders import params, study

# A valid body for every route that takes a study or trial id: the isolation walk below
# fails when a new route is added without one, so no route escapes the check.
BODIES = {
    ("POST", "/v1/studies/{study_id}/suggestions"): {"worker_id": "w1", "count": 1},
    ("POST", "/v1/studies/{study_id}/trials"): {"params": params()},
    ("POST", "/v1/studies/{study_id}/trials:batch"): {"trials": [{"params": params()}]},
    ("POST", "/v1/studies/{study_id}/extrapolate"): {"target": {"width": 1024}},
    ("POST", "/v1/studies/{study_id}/refine"): {},
    ("POST", "/v1/studies/{study_id}/rungs"): {"target": {"depth": 64}},
    ("PATCH", "/v1/studies/{study_id}"): {"state": "paused"},
    ("POST", "/v1/trials/{trial_id}/heartbeat"): {"worker_id": "w1"},
    ("POST", "/v1/trials/{trial_id}/measurements"): {
        "worker_id": "w1",
        "step": 1,
        "metrics": {"val_loss": 1.0},
    },
    ("POST", "/v1/trials/{trial_id}/complete"): {"worker_id": "w1", "metrics": {"val_loss": 1.0}},
    ("POST", "/v1/trials/{trial_id}/fail"): {"worker_id": "w1", "error": "x"},
    ("POST", "/v1/trials/{trial_id}/infeasible"): {"worker_id": "w1", "reason": "x"},
}


def _id_routes(app) -> list[tuple[str, str]]:
    """Every (method, path) of the route table that names a study or trial."""
    out = []
    for path, operations in app.openapi()["paths"].items():
        if "{study_id}" not in path and "{trial_id}" not in path:
            continue
        out.extend((method.upper(), path) for method in sorted(operations))
    return out


def test_every_id_route_hides_other_tenants(
    app_client: TestClient, client: HPOClient, worker: HPOClient, keys, admin: HPOClient
) -> None:
    s = client.create_study(study())
    t = worker.suggest(s["id"], "w1", 1)["trials"][0]
    before = admin.get_trial(t["id"])
    routes = _id_routes(app_client.app)
    assert len(routes) >= 14
    for key in (keys.other_client, keys.other_worker):
        headers = {"Authorization": f"Bearer {key}"}
        for method, path in routes:
            url = path.replace("{study_id}", s["id"]).replace("{trial_id}", t["id"])
            body = BODIES.get((method, path))
            if method in ("POST", "PATCH"):
                assert body is not None, f"no sample body for {method} {path}"
            r = app_client.request(method, url, json=body, headers=headers)
            assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
            # Indistinguishable from an id that does not exist: nothing leaks.
            ghost = path.replace("{study_id}", "st_" + "0" * 24).replace(
                "{trial_id}", "tr_" + "0" * 24
            )
            g = app_client.request(method, ghost, json=body, headers=headers)
            assert g.status_code == r.status_code, (method, path)
    after = admin.get_trial(t["id"])
    assert after == before
    assert admin.get_study(s["id"])["state"] == "active"


def test_failed_auth_is_rate_limited(settings, db) -> None:
    app = create_app(settings.model_copy(update={"auth_failure_limit": 3}), db=db)
    with TestClient(app) as tc:
        bad = {"Authorization": "Bearer hpo_key_000000000000000000000000_" + "0" * 64}
        codes = [tc.get("/v1/studies", headers=bad).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        r = tc.get("/v1/studies", headers=bad)
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) >= 1
        # another source is not affected
        assert tc.get("/v1/studies").status_code == 401


def test_keys_never_appear_in_logs(
    app_client: TestClient, keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": f"Bearer {keys.client}"}
    app_client.post("/v1/studies", json=study(), headers=headers)
    app_client.get("/v1/studies", headers={"Authorization": f"Bearer {keys.client}x"})
    secret = keys.client.rsplit("_", 1)[1]
    assert secret not in caplog.text


def test_cors_is_off_by_default(app_client: TestClient) -> None:
    r = app_client.options(
        "/v1/studies",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers
    r = app_client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
