"""GET /v1/admin/trials: every filter, ordering and keyset pagination, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.admin.conftest import History
from tests.conftest import Keys

PROBLEM = "application/problem+json"


def ids(app_client: TestClient, headers: dict[str, str], **query: Any) -> list[str]:
    r = app_client.get("/v1/admin/trials", params=query, headers=headers)
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["items"]]


def test_lists_every_tenant_with_study_columns(
    app_client: TestClient, admin_headers: dict[str, str], history: History
) -> None:
    r = app_client.get("/v1/admin/trials", headers=admin_headers)
    body = r.json()
    assert len(body["items"]) == 7
    assert body["next_page_token"] is None
    by_id = {t["id"]: t for t in body["items"]}
    done = by_id[history.completed[0]]
    assert done["tenant"] == "acme"
    assert done["family"] == "gpt"
    assert done["study_name"] == "proxy-w256"
    assert done["measurements"][0]["metrics"] == {"val_loss": 2.0}
    assert done["result"] == {"metrics": {"val_loss": 1.0}}
    assert by_id[history.imported[0]]["tenant"] == "globex"
    created = [t["created_at"] for t in body["items"]]
    assert created == sorted(created)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"tenant": "globex"}, "imported"),
        ({"family": "bert"}, "imported"),
        ({"state": "failed"}, "failed"),
        ({"state": "requested"}, "queued"),
        ({"worker_id": "w2"}, "active"),
        ({"worker_id": "w1", "state": "completed"}, "completed"),
        ({"tenant": "acme", "family": "gpt", "state": "active"}, "active"),
    ],
)
def test_filters(
    app_client: TestClient,
    admin_headers: dict[str, str],
    history: History,
    query: dict[str, str],
    expected: str,
) -> None:
    want = getattr(history, expected)
    want = set(want) if isinstance(want, list) else {want}
    assert set(ids(app_client, admin_headers, **query)) == want


def test_study_filter(
    app_client: TestClient, admin_headers: dict[str, str], history: History
) -> None:
    assert set(ids(app_client, admin_headers, study_id=history.globex_study)) == set(
        history.imported
    )
    assert len(ids(app_client, admin_headers, study_id=history.acme_study)) == 5
    assert ids(app_client, admin_headers, study_id="st_" + "0" * 24) == []
    assert ids(app_client, admin_headers, study_id="not-an-id") == []


def test_time_range_is_half_open(
    app_client: TestClient, admin_headers: dict[str, str], history: History
) -> None:
    items = app_client.get("/v1/admin/trials", headers=admin_headers).json()["items"]
    stamps = [t["created_at"] for t in items]
    middle = stamps[3]
    later = ids(app_client, admin_headers, since=middle)
    earlier = ids(app_client, admin_headers, until=middle)
    assert set(later) | set(earlier) == {t["id"] for t in items}
    assert not set(later) & set(earlier)
    assert items[3]["id"] in later
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert ids(app_client, admin_headers, since=future) == []


def test_orderings(app_client: TestClient, admin_headers: dict[str, str], history: History) -> None:
    ascending = ids(app_client, admin_headers)
    assert ids(app_client, admin_headers, order_by="-created_at") == ascending[::-1]
    finished = app_client.get(
        "/v1/admin/trials", params={"order_by": "-finished_at"}, headers=admin_headers
    ).json()["items"]
    assert {t["id"] for t in finished} == {
        *history.completed,
        history.failed,
        *history.imported,
    }
    stamps = [t["finished_at"] for t in finished]
    assert stamps == sorted(stamps, reverse=True)
    r = app_client.get("/v1/admin/trials", params={"order_by": "value"}, headers=admin_headers)
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("order_by", ["created_at", "-created_at", "finished_at", "-finished_at"])
def test_keyset_pages_cover_everything_once(
    app_client: TestClient, admin_headers: dict[str, str], history: History, order_by: str
) -> None:
    everything = ids(app_client, admin_headers, order_by=order_by)
    seen: list[str] = []
    token = None
    while True:
        query: dict[str, Any] = {"order_by": order_by, "page_size": 2}
        if token:
            query["page_token"] = token
        body = app_client.get("/v1/admin/trials", params=query, headers=admin_headers).json()
        seen += [t["id"] for t in body["items"]]
        token = body["next_page_token"]
        if token is None:
            break
    assert seen == everything


def test_page_token_of_another_ordering_is_refused(
    app_client: TestClient, admin_headers: dict[str, str], history: History
) -> None:
    token = app_client.get(
        "/v1/admin/trials", params={"page_size": 1}, headers=admin_headers
    ).json()["next_page_token"]
    r = app_client.get(
        "/v1/admin/trials",
        params={"page_token": token, "order_by": "-created_at"},
        headers=admin_headers,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["query", "page_token"]
    r = app_client.get("/v1/admin/trials", params={"page_token": "garbage!"}, headers=admin_headers)
    assert r.status_code == 422


def test_only_admins(app_client: TestClient, keys: Keys, history: History) -> None:
    for key, status in ((keys.client, 403), (keys.worker, 403), ("hpo_nope_nope", 401)):
        r = app_client.get("/v1/admin/trials", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == status
        assert r.headers["content-type"] == PROBLEM
    assert app_client.get("/v1/admin/trials").status_code == 401
