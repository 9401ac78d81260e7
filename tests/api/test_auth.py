from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hpo_service.api.auth_cache import AuthCache
from hpo_service.client import HPOClient, ProblemError
from hpo_service.db.base import utcnow
from hpo_service.domain import Principal, Role
from hpo_service.services import api_keys
from tests.builders import params, study


def test_missing_and_invalid_keys_are_401(app_client: TestClient, keys) -> None:
    r = app_client.get("/v1/studies")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["type"].endswith("/unauthenticated")
    for header in (
        "Bearer nope",
        "Bearer hpo_key_000000000000000000000000_00",
        "Basic abc",
        keys.admin,
    ):
        assert app_client.get("/v1/studies", headers={"Authorization": header}).status_code == 401
    tampered = keys.admin[:-1] + ("0" if keys.admin[-1] != "0" else "1")
    assert (
        app_client.get("/v1/studies", headers={"Authorization": f"Bearer {tampered}"}).status_code
        == 401
    )


def test_expired_key_is_401(app_client: TestClient, db) -> None:
    from datetime import timedelta

    issued = api_keys.create_key(
        db, role=Role.ADMIN, tenant="t", now=utcnow(), expires_at=utcnow() - timedelta(seconds=1)
    )
    r = app_client.get("/v1/studies", headers={"Authorization": f"Bearer {issued.key}"})
    assert r.status_code == 401


def test_forgetting_a_key_drops_every_entry_of_it_and_nothing_else() -> None:
    cache = AuthCache(ttl=60)
    revoked = Principal(key_id="key_a", role=Role.CLIENT, tenant="t")
    kept = Principal(key_id="key_b", role=Role.CLIENT, tenant="t")
    cache.put("hpo_key_a_1", revoked)
    cache.put("hpo_key_a_2", revoked)
    cache.put("hpo_key_b_1", kept)
    assert cache.forget_key("key_a") == 2
    assert cache.get("hpo_key_a_1") is None
    assert cache.get("hpo_key_a_2") is None
    assert cache.get("hpo_key_b_1") == kept
    assert cache.forget_key("key_a") == 0


def test_open_endpoints_need_no_key(app_client: TestClient) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}
    assert app_client.get("/openapi.json").status_code == 200
    assert app_client.get("/docs").status_code == 200
    ready = app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_worker_cannot_create_or_modify(
    app_client: TestClient, worker: HPOClient, client: HPOClient
) -> None:
    s = client.create_study(study())
    for call in (
        lambda: worker.create_study(study()),
        lambda: worker.update_study(s["id"], state="paused"),
        lambda: worker.add_trial(s["id"], params()),
        lambda: worker.delete_study(s["id"]),
    ):
        with pytest.raises(ProblemError) as err:
            call()
        assert err.value.status == 403
        assert err.value.slug == "forbidden"
    assert worker.get_study(s["id"])["id"] == s["id"]  # but may read its tenant's studies
    assert len(worker.suggest(s["id"], "w", 1)["trials"]) == 1


def test_client_and_admin_may_lease(client: HPOClient, admin: HPOClient) -> None:
    s = client.create_study(study())
    assert len(client.suggest(s["id"], "c", 1)["trials"]) == 1
    assert len(admin.suggest(s["id"], "a", 1)["trials"]) == 1


def test_tenants_are_isolated(
    client: HPOClient,
    outsider: HPOClient,
    worker: HPOClient,
    admin: HPOClient,
    app_client: TestClient,
    keys,
) -> None:
    s = client.create_study(study())
    t = worker.suggest(s["id"], "w1", 1)["trials"][0]
    other_worker = HPOClient(api_key=keys.other_worker, http=app_client)
    calls = [
        lambda c: c.get_study(s["id"]),
        lambda c: c.update_study(s["id"], state="paused"),
        lambda c: c.best(s["id"]),
        lambda c: c.list_trials(s["id"]),
        lambda c: c.add_trial(s["id"], params()),
        lambda c: c.suggest(s["id"], "w1", 1),
        lambda c: c.get_trial(t["id"]),
        lambda c: c.heartbeat(t["id"], "w1"),
        lambda c: c.report(t["id"], "w1", 1, {"val_loss": 1.0}),
        lambda c: c.complete(t["id"], "w1", {"val_loss": 1.0}),
        lambda c: c.fail(t["id"], "w1", "x"),
        lambda c: c.infeasible(t["id"], "w1", "x"),
    ]
    for call in calls:
        for intruder in (outsider, other_worker):
            with pytest.raises(ProblemError) as err:
                call(intruder)
            assert err.value.status in (403, 404)
            if err.value.status == 403:  # role check first is fine, but never a leak
                assert intruder is other_worker
    assert outsider.list_studies()["items"] == []
    assert [x["id"] for x in admin.list_studies()["items"]] == [s["id"]]
    assert admin.get_trial(t["id"])["state"] == "active"
    assert worker.get_trial(t["id"])["measurements"] == []


def test_keys_are_stored_hashed(db, keys) -> None:
    from sqlalchemy import text

    with db.read() as session:
        hashes = [row[0] for row in session.execute(text("SELECT secret_hash FROM api_keys"))]
    secrets_ = [k.rsplit("_", 1)[1] for k in (keys.admin, keys.client, keys.worker)]
    assert all(secret not in h for secret in secrets_ for h in hashes)
    assert all(len(h) == 64 for h in hashes)


def test_first_start_creates_one_admin_key(db) -> None:
    with db.write() as session:
        from sqlalchemy import text

        session.execute(text("DELETE FROM api_keys"))
    issued = api_keys.ensure_admin_key(db, now=utcnow())
    assert issued is not None
    assert issued.role is Role.ADMIN
    assert api_keys.ensure_admin_key(db, now=utcnow()) is None
    principal = api_keys.authenticate(db, issued.key, now=utcnow())
    assert principal.role is Role.ADMIN


def test_a_revoked_key_is_refused_at_once_by_the_app_that_revoked_it(
    app_client: TestClient, keys
) -> None:
    admin = {"Authorization": f"Bearer {keys.admin}"}
    new = app_client.post(
        "/v1/admin/keys", json={"role": "client", "tenant": "acme"}, headers=admin
    ).json()
    mine = {"Authorization": f"Bearer {new['key']}"}
    assert app_client.get("/v1/studies", headers=mine).status_code == 200  # cached now
    assert app_client.delete(f"/v1/admin/keys/{new['id']}", headers=admin).status_code == 204
    r = app_client.get("/v1/studies", headers=mine)
    assert r.status_code == 401
    assert r.json()["type"].endswith("/unauthenticated")
