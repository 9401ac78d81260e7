from __future__ import annotations

from fastapi.testclient import TestClient

from hpo_service.client import HPOClient
from tests.builders import study


def test_same_key_same_body_replays_first_response(
    app_client: TestClient, client: HPOClient
) -> None:
    headers = {**client._headers, "Idempotency-Key": "create-1"}
    first = app_client.post("/v1/studies", json=study(), headers=headers)
    second = app_client.post("/v1/studies", json=study(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert len(client.list_studies()["items"]) == 1


def test_same_key_other_body_is_409(app_client: TestClient, client: HPOClient) -> None:
    headers = {**client._headers, "Idempotency-Key": "create-2"}
    assert app_client.post("/v1/studies", json=study(), headers=headers).status_code == 201
    r = app_client.post("/v1/studies", json=study(name="other"), headers=headers)
    assert r.status_code == 409
    assert r.json()["type"].endswith("/idempotency-conflict")
    assert len(client.list_studies()["items"]) == 1


def test_keys_are_scoped_per_caller(
    app_client: TestClient, client: HPOClient, outsider: HPOClient
) -> None:
    for c in (client, outsider):
        r = app_client.post(
            "/v1/studies", json=study(), headers={**c._headers, "Idempotency-Key": "k"}
        )
        assert r.status_code == 201
    assert len(client.list_studies()["items"]) == 1
    assert len(outsider.list_studies()["items"]) == 1


def test_suggestions_with_key_lease_once(
    app_client: TestClient, client: HPOClient, worker: HPOClient
) -> None:
    s = client.create_study(study())
    headers = {**worker._headers, "Idempotency-Key": "lease-1"}
    body = {"worker_id": "w", "count": 2}
    a = app_client.post(f"/v1/studies/{s['id']}/suggestions", json=body, headers=headers).json()
    b = app_client.post(f"/v1/studies/{s['id']}/suggestions", json=body, headers=headers).json()
    assert a == b
    assert client.get_study(s["id"])["trial_counts"]["active"] == 2


def test_error_responses_are_replayed_too(app_client: TestClient, client: HPOClient) -> None:
    headers = {**client._headers, "Idempotency-Key": "bad"}
    bad = study(algorithm="nope")
    assert app_client.post("/v1/studies", json=bad, headers=headers).status_code == 422
    assert app_client.post("/v1/studies", json=bad, headers=headers).status_code == 422
