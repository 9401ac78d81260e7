from __future__ import annotations

import pytest

from hpo_service.client import HPOClient, ProblemError
from tests.builders import params, space, study

PROBLEM = "https://hpo-service.dev/problems/"


def test_create_returns_201_with_defaults(client: HPOClient, app_client) -> None:
    body = {"name": "s", "objective": {"metric": "loss"}, "space": space()}
    response = app_client.post("/v1/studies", json=body, headers=client._headers)
    assert response.status_code == 201
    created = response.json()
    assert created["id"].startswith("st_")
    assert created["tenant"] == "acme"
    assert created["state"] == "active"
    assert created["family"] is None
    assert created["max_trials"] is None
    assert created["max_attempts"] == 3
    assert created["seed"] is None
    assert created["metadata"] == {}
    assert created["objective"] == {"metric": "loss", "goal": "minimize"}
    assert created["algorithm"] in ("gp", "sobol")
    assert created["effective_space"] is None
    assert created["trial_counts"] == {
        "requested": 0,
        "active": 0,
        "stopping": 0,
        "completed": 0,
        "failed": 0,
        "infeasible": 0,
    }


def test_names_are_not_unique(client: HPOClient) -> None:
    a = client.create_study(study())
    b = client.create_study(study())
    assert a["id"] != b["id"]


def test_get_list_and_filters(client: HPOClient) -> None:
    a = client.create_study(study(name="a", family="gpt"))
    client.create_study(study(name="b", family="mlp"))
    assert client.get_study(a["id"])["name"] == "a"
    names = [s["name"] for s in client.list_studies()["items"]]
    assert names == ["a", "b"]
    assert [s["name"] for s in client.list_studies(family="gpt")["items"]] == ["a"]
    assert [s["name"] for s in client.list_studies(name="b")["items"]] == ["b"]
    client.update_study(a["id"], state="paused")
    assert [s["name"] for s in client.list_studies(state="paused")["items"]] == ["a"]


def test_list_pagination_walks_every_study_once(client: HPOClient) -> None:
    ids = [client.create_study(study(name=f"s{i}"))["id"] for i in range(7)]
    seen: list[str] = []
    token = None
    while True:
        page = client.list_studies(page_size=3, page_token=token)
        seen += [s["id"] for s in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == ids


def test_page_size_bounds(client: HPOClient) -> None:
    with pytest.raises(ProblemError) as err:
        client.list_studies(page_size=1001)
    assert err.value.status == 422
    with pytest.raises(ProblemError) as err:
        client.list_studies(page_token="!!!not-a-token")
    assert err.value.status == 422
    assert err.value.errors == [{"loc": ["query", "page_token"], "msg": "malformed page token"}]


def test_patch_changes_only_sent_fields(client: HPOClient) -> None:
    s = client.create_study(study(max_trials=5, metadata={"owner": "ann"}))
    patched = client.update_study(s["id"], state="paused")
    assert patched["state"] == "paused"
    assert patched["max_trials"] == 5
    assert patched["metadata"] == {"owner": "ann"}
    patched = client.update_study(s["id"], max_trials=None, metadata={"x": 1})
    assert patched["max_trials"] is None
    assert patched["metadata"] == {"x": 1}
    assert patched["state"] == "paused"


def test_delete_needs_admin_and_removes_trials(
    client: HPOClient, admin: HPOClient, worker: HPOClient
) -> None:
    s = client.create_study(study())
    trial = worker.suggest(s["id"], "w", 1)["trials"][0]
    with pytest.raises(ProblemError) as err:
        client.delete_study(s["id"])
    assert err.value.status == 403
    assert admin.delete_study(s["id"]) is None
    with pytest.raises(ProblemError) as err:
        client.get_study(s["id"])
    assert err.value.status == 404
    with pytest.raises(ProblemError) as err:
        client.get_trial(trial["id"])
    assert err.value.status == 404


def test_best_empty_then_best_by_goal(client: HPOClient, worker: HPOClient) -> None:
    s = client.create_study(study(objective={"metric": "acc", "goal": "maximize"}))
    assert client.best(s["id"]) == []
    client.add_trial(s["id"], params(lr=1e-3), {"acc": 0.7})
    best = client.add_trial(s["id"], params(lr=2e-3), {"acc": 0.9})
    client.add_trial(s["id"], params(lr=3e-3), {"acc": 0.8})
    assert [t["id"] for t in client.best(s["id"])] == [best["id"]]


def test_invalid_space_is_422_with_location(app_client, client: HPOClient) -> None:
    bad = study(
        space={"parameters": [{"name": "lr", "type": "float", "low": 0, "high": 1, "scale": "log"}]}
    )
    response = app_client.post("/v1/studies", json=bad, headers=client._headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": PROBLEM + "validation-error",
        "title": "Invalid input",
        "status": 422,
        "detail": "body.space.parameters.0.float: log scale requires low > 0, got 0.0",
        "instance": "/v1/studies",
        "errors": [
            {
                "loc": ["body", "space", "parameters", 0, "float"],
                "msg": "log scale requires low > 0, got 0.0",
            }
        ],
    }


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            [{"name": "a", "type": "int", "low": 3, "high": 3}],
            "low (3) must be smaller than high (3)",
        ),
        (
            [{"name": "a", "type": "ordinal", "values": [1, 1]}],
            "ordinal values must be strictly increasing",
        ),
        (
            [{"name": "a", "type": "categorical", "choices": ["x", "x"]}],
            "categorical choices must be unique",
        ),
        (
            [
                {"name": "a", "type": "float", "low": 0, "high": 1},
                {"name": "a", "type": "float", "low": 0, "high": 1},
            ],
            "parameter name 'a' is used twice",
        ),
        (
            [
                {
                    "name": "a",
                    "type": "float",
                    "low": 0,
                    "high": 1,
                    "conditions": {"parent": "zz", "values": ["x"]},
                }
            ],
            "parameter 'a' depends on unknown parent 'zz'",
        ),
        (
            [
                {"name": "o", "type": "categorical", "choices": ["x"]},
                {
                    "name": "a",
                    "type": "float",
                    "low": 0,
                    "high": 1,
                    "conditions": {"parent": "o", "values": ["y"]},
                },
            ],
            "condition of 'a': 'y' is not a value of 'o'",
        ),
    ],
)
def test_space_validation_messages(app_client, client: HPOClient, parameters, message) -> None:
    response = app_client.post(
        "/v1/studies", json=study(space={"parameters": parameters}), headers=client._headers
    )
    assert response.status_code == 422
    assert any(e["msg"] == message for e in response.json()["errors"]), response.json()


def test_bad_name_and_unknown_fields(app_client, client: HPOClient) -> None:
    bad = study(space={"parameters": [{"name": "bad name!", "type": "float", "low": 0, "high": 1}]})
    r = app_client.post("/v1/studies", json=bad, headers=client._headers)
    assert r.status_code == 422
    r = app_client.post("/v1/studies", json=study(colour="red"), headers=client._headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "colour"]


def test_unknown_algorithm(app_client, client: HPOClient) -> None:
    r = app_client.post("/v1/studies", json=study(algorithm="cmaes-xl"), headers=client._headers)
    assert r.status_code == 422
    body = r.json()
    assert body["type"] == PROBLEM + "unknown-algorithm"
    assert body["errors"][0]["loc"] == ["body", "algorithm"]
    assert "random" in body["detail"]
    assert "sobol" in body["detail"]


def test_missing_required_fields(app_client, client: HPOClient) -> None:
    r = app_client.post("/v1/studies", json={"name": "x"}, headers=client._headers)
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["errors"]]
    assert ["body", "objective"] in locs
    assert ["body", "space"] in locs


def test_malformed_json_is_422(app_client, client: HPOClient) -> None:
    r = app_client.post(
        "/v1/studies",
        content=b"{not json",
        headers={**client._headers, "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"


def test_patch_validation(app_client, client: HPOClient) -> None:
    s = client.create_study(study())
    r = app_client.patch(
        f"/v1/studies/{s['id']}", json={"state": "exploded"}, headers=client._headers
    )
    assert r.status_code == 422
    assert client.get_study(s["id"])["state"] == "active"


def test_unknown_and_malformed_ids_are_404(client: HPOClient) -> None:
    for sid in ("st_000000000000000000000000", "not an id", "%00"):
        with pytest.raises(ProblemError) as err:
            client.get_study(sid)
        assert err.value.status == 404
        assert err.value.slug == "not-found"
