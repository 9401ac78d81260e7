"""Transfer over HTTP, on SQLite and PostgreSQL: creation, effective_space, region, preview."""

from __future__ import annotations

import math

import pytest

from hpo_service.client import HPOClient, ProblemError

SPACE = {
    "parameters": [
        {"name": "lr", "type": "float", "low": 1e-5, "high": 1.0, "scale": "log"},
        {"name": "width", "type": "int", "low": 16, "high": 1024, "scale": "log"},
        {"name": "opt", "type": "categorical", "choices": ["adamw", "sgd", "lion"]},
    ]
}


def loss(p: dict, shift: float = 0.0) -> float:
    return (
        (math.log10(p["lr"]) + 3 + shift) ** 2
        + 0.1 * abs(math.log2(p["width"]) - 8)
        + (0.0 if p["opt"] == "adamw" else 10.0)
    )


def body(**extra) -> dict:
    return {
        "name": "s",
        "family": "mlp",
        "objective": {"metric": "loss"},
        "space": SPACE,
        "algorithm": "random",
        "seed": 3,
        **extra,
    }


def seed_family(client: HPOClient, n_sources: int = 3, n_trials: int = 12) -> list[str]:
    ids = []
    for s in range(n_sources):
        study = client.create_study(body(name=f"src{s}"))
        trials = []
        for i in range(n_trials):
            p = {
                "lr": 10 ** (-1 - 4 * ((i * 7 + s) % n_trials) / n_trials),
                "width": 16 * 2 ** (i % 7),
                "opt": ["adamw", "sgd", "lion"][i % 3],
            }
            trials.append({"params": p, "result": {"metrics": {"loss": loss(p, 0.1 * s)}}})
        client.add_trials(study["id"], trials)
        ids.append(study["id"])
    return ids


@pytest.mark.parametrize("method", ["box", "ellipsoid"])
def test_study_learns_a_region_from_its_family(
    client: HPOClient, worker: HPOClient, method: str
) -> None:
    sources = seed_family(client)
    study = client.create_study(body(name="target", transfer={"method": method, "top_k": 4}))
    assert study["transfer"] == {"method": method, "top_k": 4, "sources": "family"}
    eff = study["effective_space"]
    assert eff["version"] == 1
    assert sorted(eff["sources"]) == sorted(sources)
    assert 0 < eff["volume_fraction"] < 1
    narrowed = {p["name"]: p for p in eff["space"]["parameters"]}
    assert narrowed["opt"]["choices"] == ["adamw"]

    region = client.request("GET", f"/v1/studies/{study['id']}/region")
    assert region["version"] == 1
    assert region["kind"] in ("box", "ellipsoid")
    assert region["bounds"]["lr"]["low"] < region["bounds"]["lr"]["high"]
    assert region["categorical_subsets"] == {"opt": ["adamw"]}
    # each source's best, plus the consensus point of the three when it is a new point
    n_seeds = len(region["seeds"])
    assert n_seeds in (3, 4)

    got = worker.suggest(study["id"], "w1", count=n_seeds + 2)["trials"]
    assert [t["source"] for t in got[:n_seeds]] == ["transfer_seed"] * n_seeds  # random: all
    assert [t["params"] for t in got[:n_seeds]] == region["seeds"]
    assert {t["source"] for t in got[n_seeds:]} <= {"transfer_region", "fallback_random"}
    for t in got[n_seeds:]:
        assert t["params"]["opt"] == "adamw"
        assert region["bounds"]["lr"]["low"] <= t["params"]["lr"] <= region["bounds"]["lr"]["high"]
        assert t["metadata"]["transfer"]["version"] == 1

    again = client.get_study(study["id"])
    assert again["effective_space"] == eff  # stored: it survives re-reading


def test_no_usable_source_creates_the_study_on_the_full_space(client: HPOClient) -> None:
    study = client.create_study(body(transfer={"method": "box"}))
    assert study["effective_space"] is None
    with pytest.raises(ProblemError) as err:
        client.request("GET", f"/v1/studies/{study['id']}/region")
    assert err.value.status == 404
    assert "no earlier study" in err.value.detail


def test_method_none_is_plain(client: HPOClient) -> None:
    seed_family(client, n_sources=1)
    study = client.create_study(body(transfer={"method": "none"}))
    assert study["transfer"]["method"] == "none"
    assert study["effective_space"] is None


def test_named_sources_must_exist_and_be_usable(client: HPOClient, outsider: HPOClient) -> None:
    foreign = outsider.create_study(body())
    with pytest.raises(ProblemError) as err:
        client.create_study(body(transfer={"method": "box", "sources": [foreign["id"]]}))
    assert err.value.status == 422
    assert err.value.errors[0]["loc"] == ["body", "transfer", "sources", 0]
    empty = client.create_study(body())
    with pytest.raises(ProblemError) as err:
        client.create_study(body(transfer={"method": "box", "sources": [empty["id"]]}))
    assert "completed trials" in err.value.errors[0]["msg"]


def test_other_tenants_studies_are_never_sources(client: HPOClient, outsider: HPOClient) -> None:
    seed_family(outsider)
    study = client.create_study(body(transfer={"method": "box"}))
    assert study["effective_space"] is None


def test_preview_does_not_create_a_study(client: HPOClient) -> None:
    sources = seed_family(client)
    before = len(client.list_studies()["items"])
    view = client.request(
        "POST",
        "/v1/families/mlp/region:preview",
        json={"method": "box", "top_k": 3, "space": SPACE},
    )
    assert view["family"] == "mlp"
    assert sorted(view["sources"]) == sorted(sources)
    assert view["kind"] == "box"
    assert len(client.list_studies()["items"]) == before
    with pytest.raises(ProblemError) as err:
        client.request(
            "POST", "/v1/families/nothing/region:preview", json={"method": "box", "space": SPACE}
        )
    assert err.value.status == 422


def test_region_of_unknown_or_foreign_study_is_404(client: HPOClient, outsider: HPOClient) -> None:
    seed_family(client)
    study = client.create_study(body(transfer={"method": "box"}))
    with pytest.raises(ProblemError) as err:
        outsider.request("GET", f"/v1/studies/{study['id']}/region")
    assert err.value.status == 404
    with pytest.raises(ProblemError) as err:
        client.request("GET", "/v1/studies/st_doesnotexist/region")
    assert err.value.status == 404


def test_workers_cannot_preview(worker: HPOClient) -> None:
    with pytest.raises(ProblemError) as err:
        worker.request("POST", "/v1/families/mlp/region:preview", json={"space": SPACE})
    assert err.value.status == 403


def test_dashboard_study_page_shows_the_learned_region(client: HPOClient, app_client, keys) -> None:
    from tests.dashboard.conftest import login

    seed_family(client)
    target = client.create_study(body(name="target", transfer={"method": "box", "top_k": 3}))
    login(app_client, keys.client)
    page = app_client.get(f"/ui/studies/{target['id']}").text
    region = page.split('id="region"')[1]
    assert "lr" in region
    assert "width" in region
