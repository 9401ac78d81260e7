"""GET /v1/admin/stats and the Prometheus /metrics endpoint."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.models import TrialRow
from hpo_service.services import leases
from tests.admin.conftest import History
from tests.conftest import Keys


def samples(app_client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = app_client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def expire_lease(db: Database, trial_id: str) -> None:
    with db.write() as session:
        session.execute(
            update(TrialRow)
            .where(TrialRow.id == trial_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_stats_counts(
    app_client: TestClient, admin_headers: dict[str, str], history: History, db: Database
) -> None:
    expire_lease(db, history.active)
    body = app_client.get("/v1/admin/stats", headers=admin_headers).json()
    assert body["trials_by_state"] == {"completed": 4, "active": 1, "failed": 1, "requested": 1}
    assert body["trials_by_source"] == {"engine": 4, "user": 3}
    assert body["queue_depth"] == 1
    assert body["active_leases"] == 1
    assert body["active_workers"] == 1
    assert body["overdue_leases"] == 1
    assert body["lease_expiries"] == 0
    durations = body["trial_duration_s"]
    assert durations["count"] == 3  # the two completed by w1 and the failed one
    assert 0 <= durations["p50"] <= durations["p90"] <= durations["max"]
    routes = {(x["method"], x["route"]) for x in body["request_latency"]}
    assert ("POST", "/v1/studies/{study_id}/suggestions") in routes
    leases.reclaim_expired(db, utcnow())
    body = app_client.get("/v1/admin/stats", headers=admin_headers).json()
    assert body["lease_expiries"] == 1
    assert body["overdue_leases"] == 0
    assert body["queue_depth"] == 2
    acme = app_client.get("/v1/admin/stats", params={"tenant": "globex"}, headers=admin_headers)
    assert acme.json()["trials_by_state"] == {"completed": 2}


def test_stats_only_for_admins(app_client: TestClient, keys: Keys) -> None:
    r = app_client.get("/v1/admin/stats", headers={"Authorization": f"Bearer {keys.client}"})
    assert r.status_code == 403


def test_metrics(app_client: TestClient, history: History, db: Database) -> None:
    s = samples(app_client)
    key = (
        "hpo_http_requests_total",
        (("method", "POST"), ("route", "/v1/studies/{study_id}/suggestions"), ("status", "200")),
    )
    assert s[key] == 3
    hist = (
        "hpo_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/v1/studies/{study_id}/suggestions")),
    )
    assert s[hist] == 3
    assert s[("hpo_suggestions", (("source", "engine"),))] == 4
    assert s[("hpo_suggestions", (("source", "user"),))] == 3
    assert s[("hpo_queue_depth", ())] == 1
    assert s[("hpo_trials", (("state", "active"),))] == 1
    assert s[("hpo_active_workers", ())] == 1
    assert s[("hpo_database_up", ())] == 1
    expire_lease(db, history.active)
    leases.reclaim_expired(db, utcnow())
    s = samples(app_client)
    assert s[("hpo_lease_expiries", ())] == 1
    assert s[("hpo_queue_depth", ())] == 2
    # Unknown paths are counted under one label, not one per path.
    app_client.get("/no/such/path/123")
    s = samples(app_client)
    assert (
        s[
            (
                "hpo_http_requests_total",
                (("method", "GET"), ("route", "unmatched"), ("status", "404")),
            )
        ]
        == 1
    )
