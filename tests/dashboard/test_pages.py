"""Dashboard over HTTP: login, cookies, CSRF, headers, tenant scoping, every page."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from hpo_service.client import HPOClient
from tests.conftest import Keys
from tests.dashboard.conftest import csrf_of, login, make_scaled_study, make_study


def chart_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="study-data">(.*?)</script>', html, re.S)
    assert match
    return json.loads(match.group(1))


def test_pages_need_a_session(app_client: TestClient) -> None:
    for path in ("/ui/", "/ui/workers", "/ui/studies/st_" + "0" * 24, "/ui/families/x"):
        r = app_client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/ui/login"


def test_login_sets_a_hardened_cookie_and_never_stores_the_key(
    app_client: TestClient, keys: Keys
) -> None:
    form = app_client.get("/ui/login")
    r = app_client.post(
        "/ui/login", data={"key": keys.client, "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    assert r.status_code == 303
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("hpo_session="))
    flags = cookie.lower()
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/ui" in flags
    assert keys.client not in cookie
    assert keys.client.rsplit("_", 1)[1] not in cookie


def test_login_rejects_bad_keys_worker_keys_and_missing_csrf(
    app_client: TestClient, keys: Keys
) -> None:
    csrf = csrf_of(app_client.get("/ui/login").text)
    bad = app_client.post("/ui/login", data={"key": "hpo_x_y", "csrf": csrf})
    assert bad.status_code == 401
    assert "invalid" in bad.text
    csrf = csrf_of(app_client.get("/ui/login").text)
    worker = app_client.post("/ui/login", data={"key": keys.worker, "csrf": csrf})
    assert worker.status_code == 403
    app_client.get("/ui/login")
    forged = app_client.post("/ui/login", data={"key": keys.client, "csrf": "forged"})
    assert forged.status_code == 403
    assert "hpo_session" not in app_client.cookies


def test_key_bootstrap_link_redirects_without_the_key(app_client: TestClient, keys: Keys) -> None:
    r = app_client.get("/ui/", params={"key": keys.client}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/"
    assert app_client.get("/ui/").status_code == 200


def test_security_headers(app_client: TestClient, keys: Keys) -> None:
    login(app_client, keys.client)
    for path in ("/ui/", "/ui/login", "/ui/static/dashboard.js"):
        r = app_client.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert app_client.get("/ui/").headers["cache-control"] == "no-store"
    page = app_client.get("/ui/").text
    assert "cdn" not in page.lower()
    # No inline script anywhere: every <script> has a src or is an inert JSON block.
    for tag in re.findall(r"<script[^>]*>", page):
        assert "src=" in tag or 'type="application/json"' in tag


def test_studies_list_is_tenant_scoped(
    app_client: TestClient, keys: Keys, client: HPOClient, worker: HPOClient, outsider: HPOClient
) -> None:
    mine = make_study(client, worker)
    theirs = outsider.create_study(
        {
            "name": "globex-secret",
            "objective": {"metric": "m"},
            "space": {"parameters": [{"name": "x", "type": "float", "low": 0, "high": 1}]},
        }
    )["id"]
    login(app_client, keys.client)
    page = app_client.get("/ui/").text
    assert mine in page
    assert "proxy-w256" in page
    assert theirs not in page
    assert "globex-secret" not in page
    r = app_client.get(f"/ui/studies/{theirs}")
    assert r.status_code == 404
    assert "globex-secret" not in r.text
    assert app_client.get(f"/ui/studies/{mine}").status_code == 200


def test_admin_sees_every_tenant(
    app_client: TestClient, keys: Keys, client: HPOClient, worker: HPOClient, outsider: HPOClient
) -> None:
    make_study(client, worker)
    outsider.create_study(
        {
            "name": "globex-study",
            "objective": {"metric": "m"},
            "space": {"parameters": [{"name": "x", "type": "float", "low": 0, "high": 1}]},
        }
    )
    login(app_client, keys.admin)
    page = app_client.get("/ui/").text
    assert "proxy-w256" in page
    assert "globex-study" in page


def test_study_page_has_chart_data_table_and_filters(
    app_client: TestClient, keys: Keys, client: HPOClient, worker: HPOClient
) -> None:
    sid = make_study(client, worker)
    login(app_client, keys.client)
    page = app_client.get(f"/ui/studies/{sid}").text
    data = chart_data(page)
    assert data["metric"] == "val_loss"
    assert data["goal"] == "minimize"
    values = [t["value"] for t in data["trials"] if t["value"] is not None]
    assert len(values) == 5
    bests = [t["best"] for t in data["trials"] if t["best"] is not None]
    assert bests == sorted(bests, reverse=True)  # best so far only improves
    assert {p["name"] for p in data["params"]} >= {"lr", "optimizer", "batch_size"}
    assert 'id="chart-history"' in page
    assert 'id="chart-parallel"' in page
    assert "/ui/static/echarts.min.js" in page
    failed = app_client.get(f"/ui/studies/{sid}", params={"state": "failed"}).text
    table = failed.split('id="trials"')[1]
    assert table.count("state-failed") == 1
    assert "state-completed" not in table
    by_worker = app_client.get(f"/ui/studies/{sid}", params={"worker_id": "w9"}).text
    assert by_worker.split('id="trials"')[1].count("<tr>") == 2  # header + one trial


def test_study_page_extrapolates_when_the_study_has_scale(
    app_client: TestClient, keys: Keys, client: HPOClient
) -> None:
    sid = make_scaled_study(client)
    login(app_client, keys.client)
    page = app_client.get(f"/ui/studies/{sid}").text
    assert 'id="extrapolation"' in page
    assert "lr.hidden" in page
    assert "mup" in page
    assert 'name="target_width" value="1024"' in page
    wider = app_client.get(f"/ui/studies/{sid}", params={"target_width": "4096"}).text
    assert 'name="target_width" value="4096"' in wider


def test_family_and_workers_pages(
    app_client: TestClient, keys: Keys, client: HPOClient, worker: HPOClient
) -> None:
    sid = make_study(client, worker)
    login(app_client, keys.client)
    family = app_client.get("/ui/families/gpt").text
    assert sid in family
    workers = app_client.get("/ui/workers").text
    assert "w9" in workers.split('id="workers"')[1]
    assert "No lease has expired" in workers


def test_logout_needs_the_session_csrf_token(app_client: TestClient, keys: Keys) -> None:
    csrf = login(app_client, keys.client)
    r = app_client.post("/ui/logout", data={"csrf": "wrong"}, follow_redirects=False)
    assert r.status_code == 403
    assert app_client.get("/ui/", follow_redirects=False).status_code == 200
    r = app_client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert app_client.get("/ui/", follow_redirects=False).status_code == 303


def test_revoking_the_key_ends_its_sessions(app_client: TestClient, keys: Keys) -> None:
    admin = {"Authorization": f"Bearer {keys.admin}"}
    new = app_client.post(
        "/v1/admin/keys", json={"role": "client", "tenant": "acme"}, headers=admin
    ).json()
    login(app_client, new["key"])
    assert app_client.get("/ui/", follow_redirects=False).status_code == 200
    app_client.delete(f"/v1/admin/keys/{new['id']}", headers=admin)
    assert app_client.get("/ui/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("cookie", ["", "garbage", "key_x.1.2.3", "key_x.99999999999.nonce.sig"])
def test_forged_cookies_are_refused(app_client: TestClient, cookie: str) -> None:
    app_client.cookies.set("hpo_session", cookie, path="/ui")
    assert app_client.get("/ui/", follow_redirects=False).status_code == 303
