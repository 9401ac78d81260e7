"""The study page's "Refine per module" button: CSRF, redirect to the child, refusals."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hpo_service.client import HPOClient
from tests.conftest import Keys
from tests.dashboard.conftest import SCALE_SPACE, login, make_scaled_study, make_study

FORM = 'id="refine-form"'


def test_refine_button_creates_the_child_and_opens_it(
    app_client: TestClient, keys: Keys, client: HPOClient
) -> None:
    sid = make_scaled_study(client)
    csrf = login(app_client, keys.client)
    page = app_client.get(f"/ui/studies/{sid}").text
    assert FORM in page
    assert f'action="/ui/studies/{sid}/refine"' in page
    r = app_client.post(f"/ui/studies/{sid}/refine", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    child_id = r.headers["location"].rsplit("/", 1)[1]
    child = client.get_study(child_id)
    assert child["metadata"]["parent_study"] == sid
    assert child["algorithm"] == "local"
    params = {p["name"]: p for p in child["space"]["parameters"]}
    assert {"init_std.hidden", "init_std.embedding", "init_std.readout"} <= set(params)
    assert params["init_std"]["values"] == [0.02]  # the API's defaults: the bare name pinned
    assert params["init_std.hidden"]["high"] == pytest.approx(0.08)
    opened = app_client.get(r.headers["location"])
    assert opened.status_code == 200
    assert f'href="/ui/studies/{sid}" id="parent-study"' in opened.text
    assert "state-requested" in opened.text.split('id="trials"')[1]
    assert FORM not in opened.text  # no completed trial in the child yet


def test_refine_needs_the_session_csrf_token(
    app_client: TestClient, keys: Keys, client: HPOClient
) -> None:
    sid = make_scaled_study(client)
    login(app_client, keys.client)
    r = app_client.post(f"/ui/studies/{sid}/refine", data={"csrf": "forged"})
    assert r.status_code == 403
    app_client.cookies.clear()
    r = app_client.post(f"/ui/studies/{sid}/refine", data={"csrf": "x"}, follow_redirects=False)
    assert r.headers["location"] == "/ui/login"
    assert len(client.list_studies()["items"]) == 1


def test_refusals_show_the_study_again_with_the_reason(
    app_client: TestClient, keys: Keys, client: HPOClient, worker: HPOClient, outsider: HPOClient
) -> None:
    fresh = client.create_study(
        {
            "name": "no-results-yet",
            "objective": {"metric": "val_loss"},
            "space": SCALE_SPACE,
            "scale": {"parameterization": "mup", "proxy": {"width": 256}},
        }
    )["id"]
    unscaled = make_study(client, worker)
    theirs = make_scaled_study(outsider)
    csrf = login(app_client, keys.client)
    for sid in (fresh, unscaled):
        assert FORM not in app_client.get(f"/ui/studies/{sid}").text
    r = app_client.post(f"/ui/studies/{fresh}/refine", data={"csrf": csrf})
    assert r.status_code == 409
    assert 'id="refine-error"' in r.text
    assert "no completed feasible trial" in r.text
    r = app_client.post(f"/ui/studies/{unscaled}/refine", data={"csrf": csrf})
    assert r.status_code == 422
    assert "no &#39;scale&#39; configuration" in r.text
    r = app_client.post(f"/ui/studies/{theirs}/refine", data={"csrf": csrf})
    assert r.status_code == 404
    assert len(client.list_studies()["items"]) == 2
