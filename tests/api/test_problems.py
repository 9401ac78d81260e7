from __future__ import annotations

import re

from fastapi.testclient import TestClient

from hpo_service import errors
from hpo_service.client import HPOClient
from hpo_service.errors import HPOError
from tests.builders import study

PROBLEM = "https://hpo-service.dev/problems/"


def test_unknown_route_is_problem_404(app_client: TestClient) -> None:
    r = app_client.get("/v2/nothing")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": PROBLEM + "not-found",
        "title": "Not found",
        "status": 404,
        "detail": "no route GET /v2/nothing",
        "instance": "/v2/nothing",
    }


def test_wrong_method_is_problem_405(app_client: TestClient) -> None:
    r = app_client.put("/healthz")
    assert r.status_code == 405
    assert r.json()["type"] == PROBLEM + "method-not-allowed"


def test_oversized_body_is_413_and_stores_nothing(
    app_client: TestClient, client: HPOClient
) -> None:
    body = study(metadata={"blob": "x" * 2_000_000})
    r = app_client.post("/v1/studies", json=body, headers=client._headers)
    assert r.status_code == 413
    assert r.json()["type"] == PROBLEM + "payload-too-large"
    assert client.list_studies()["items"] == []


def test_deeply_nested_json_is_422(app_client: TestClient, client: HPOClient) -> None:
    deep = b'{"name": "x", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = app_client.post(
        "/v1/studies", content=deep, headers={**client._headers, "content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["errors"] == [{"loc": ["body"], "msg": "nesting too deep"}]


def test_nul_bytes_are_rejected_not_500(app_client: TestClient, client: HPOClient) -> None:
    r = app_client.post("/v1/studies", json=study(name="a\x00b"), headers=client._headers)
    assert r.status_code in (201, 422)
    assert r.headers["content-type"].startswith("application/")


def test_openapi_describes_every_route(app_client: TestClient) -> None:
    paths = app_client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/studies",
        "/v1/studies/{study_id}",
        "/v1/studies/{study_id}/best",
        "/v1/studies/{study_id}/suggestions",
        "/v1/studies/{study_id}/trials",
        "/v1/studies/{study_id}/trials:batch",
        "/v1/trials/{trial_id}",
        "/v1/trials/{trial_id}/heartbeat",
        "/v1/trials/{trial_id}/measurements",
        "/v1/trials/{trial_id}/complete",
        "/v1/trials/{trial_id}/fail",
        "/v1/trials/{trial_id}/infeasible",
        "/healthz",
        "/readyz",
    ):
        assert path in paths, path
    assert set(paths["/v1/studies/{study_id}"]) == {"get", "patch", "delete"}


def _error_classes() -> list[type[HPOError]]:
    found, todo = [], [HPOError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_each_slug_is_declared_by_one_error_class() -> None:
    # Responses take their slug from these classes, so two classes with one slug would
    # make two different errors indistinguishable to clients.
    declared = [cls.slug for cls in _error_classes() if "slug" in vars(cls)]
    assert len(declared) == len(set(declared))
    assert {"not-found", "method-not-allowed", "payload-too-large"} <= set(declared)


def test_the_documented_error_tree_matches_the_classes() -> None:
    assert errors.__doc__ is not None
    documented = re.findall(r"(\w+Error) \((\d+), ([\w-]+)\)", errors.__doc__)
    assert len(documented) >= 15
    for name, status, slug in documented:
        cls = getattr(errors, name)
        assert (cls.status, cls.slug) == (int(status), slug), name
