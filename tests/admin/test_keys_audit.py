"""Key management (shown once, stored hashed, expiry, last use, revocation) and the audit log."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from hpo_service.db.database import Database
from hpo_service.db.models import ApiKeyRow
from hpo_service.services.key_usage import KeyUsageRecorder
from tests.conftest import Keys

PROBLEM = "application/problem+json"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(app_client: TestClient, headers: dict[str, str], **body: object) -> dict:
    r = app_client.post(
        "/v1/admin/keys", json={"role": "client", "tenant": "acme", **body}, headers=headers
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_key_is_shown_once_and_stored_hashed(
    app_client: TestClient, admin_headers: dict[str, str], db: Database
) -> None:
    new = create(app_client, admin_headers, name="ci bot")
    assert new["key"].startswith(f"hpo_{new['id']}_")
    assert new["role"] == "client"
    assert new["tenant"] == "acme"
    assert new["name"] == "ci bot"
    assert app_client.get("/v1/studies", headers=bearer(new["key"])).status_code == 200
    listed = app_client.get("/v1/admin/keys", headers=admin_headers).json()["items"]
    row = next(k for k in listed if k["id"] == new["id"])
    assert "key" not in row
    assert "secret_hash" not in row
    assert new["key"] not in str(listed)
    with db.read() as session:
        stored = session.get(ApiKeyRow, new["id"])
        assert stored is not None
        secret = new["key"].rsplit("_", 1)[1]
        assert stored.secret_hash == hmac.new(db.key_secret, secret.encode(), "sha256").hexdigest()
        assert secret not in stored.secret_hash


def test_expiry(app_client: TestClient, admin_headers: dict[str, str]) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    new = create(app_client, admin_headers, expires_at=soon.isoformat())
    assert datetime.fromisoformat(new["expires_at"]) == soon
    assert app_client.get("/v1/studies", headers=bearer(new["key"])).status_code == 200
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    r = app_client.post(
        "/v1/admin/keys",
        json={"role": "worker", "tenant": "acme", "expires_at": past},
        headers=admin_headers,
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["errors"][0]["loc"] == ["body", "expires_at"]


def test_revoke_stops_the_key_at_once(
    app_client: TestClient, admin_headers: dict[str, str]
) -> None:
    new = create(app_client, admin_headers)
    assert (
        app_client.delete(f"/v1/admin/keys/{new['id']}", headers=admin_headers).status_code == 204
    )
    assert app_client.get("/v1/studies", headers=bearer(new["key"])).status_code == 401
    listed = app_client.get("/v1/admin/keys", headers=admin_headers).json()["items"]
    assert next(k for k in listed if k["id"] == new["id"])["revoked_at"] is not None
    # Revoking again is harmless; an unknown key is a 404 problem.
    assert (
        app_client.delete(f"/v1/admin/keys/{new['id']}", headers=admin_headers).status_code == 204
    )
    r = app_client.delete("/v1/admin/keys/key_" + "0" * 24, headers=admin_headers)
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM


def test_key_validation_and_roles(
    app_client: TestClient, admin_headers: dict[str, str], keys: Keys
) -> None:
    for body in (
        {"role": "root", "tenant": "a"},
        {"role": "client", "tenant": ""},
        {"role": "client"},
    ):
        r = app_client.post("/v1/admin/keys", json=body, headers=admin_headers)
        assert r.status_code == 422, body
        assert r.headers["content-type"] == PROBLEM
    r = app_client.post(
        "/v1/admin/keys", json={"role": "admin", "tenant": "acme"}, headers=bearer(keys.client)
    )
    assert r.status_code == 403
    assert app_client.get("/v1/admin/keys", headers=bearer(keys.worker)).status_code == 403
    assert app_client.delete("/v1/admin/keys/x", headers=bearer(keys.client)).status_code == 403


def test_key_list_pages_and_filters(
    app_client: TestClient, admin_headers: dict[str, str], keys: Keys
) -> None:
    seen, token = [], None
    while True:
        params: dict[str, object] = {"page_size": 2}
        if token:
            params["page_token"] = token
        body = app_client.get("/v1/admin/keys", params=params, headers=admin_headers).json()
        seen += [k["id"] for k in body["items"]]
        token = body["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == 5
    globex = app_client.get("/v1/admin/keys", params={"tenant": "globex"}, headers=admin_headers)
    assert {k["role"] for k in globex.json()["items"]} == {"client", "worker"}


def test_last_used_is_recorded_and_throttled(
    app_client: TestClient, admin_headers: dict[str, str], db: Database
) -> None:
    new = create(app_client, admin_headers)

    def last_used() -> datetime | None:
        with db.read() as session:
            row = session.get(ApiKeyRow, new["id"])
            assert row is not None
            return row.last_used_at

    assert last_used() is None
    app_client.get("/v1/studies", headers=bearer(new["key"]))
    first = last_used()
    assert first is not None
    app_client.get("/v1/studies", headers=bearer(new["key"]))
    assert last_used() == first  # within the minute: no second write
    recorder = KeyUsageRecorder(db, period_seconds=60)
    recorder.record(new["id"], first + timedelta(seconds=30))
    assert last_used() == first  # another process, same minute: the UPDATE's guard holds
    later = first + timedelta(seconds=61)
    KeyUsageRecorder(db).record(new["id"], later)
    assert last_used() == later


def test_audit_log_records_key_actions_newest_first(
    app_client: TestClient, admin_headers: dict[str, str], keys: Keys
) -> None:
    new = create(app_client, admin_headers, name="temp")
    app_client.delete(f"/v1/admin/keys/{new['id']}", headers=admin_headers)
    entries = app_client.get("/v1/admin/audit", headers=admin_headers).json()["items"]
    assert [e["action"] for e in entries[:2]] == ["key.revoke", "key.create"]
    created = entries[1]
    assert created["target"] == new["id"]
    assert created["actor_role"] == "admin"
    assert created["actor_tenant"] == "ops"
    assert created["detail"] == {"role": "client", "tenant": "acme", "name": "temp"}
    assert new["key"] not in str(entries)
    only = app_client.get(
        "/v1/admin/audit", params={"action": "key.create"}, headers=admin_headers
    ).json()["items"]
    assert [e["action"] for e in only] == ["key.create"]
    first = app_client.get("/v1/admin/audit", params={"page_size": 1}, headers=admin_headers)
    token = first.json()["next_page_token"]
    second = app_client.get(
        "/v1/admin/audit", params={"page_size": 1, "page_token": token}, headers=admin_headers
    ).json()
    assert second["items"][0]["action"] == "key.create"
    assert app_client.get("/v1/admin/audit", headers=bearer(keys.client)).status_code == 403


def test_exports_are_audited(app_client: TestClient, admin_headers: dict[str, str]) -> None:
    app_client.get("/v1/admin/export", params={"format": "csv"}, headers=admin_headers)
    entries = app_client.get("/v1/admin/audit", headers=admin_headers).json()["items"]
    assert entries[0]["action"] == "export"
    assert entries[0]["detail"] == {"format": "csv", "scope": "all"}
