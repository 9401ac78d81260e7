"""``POST /v1/studies/{id}/rungs``: depth rungs for the family ladder, over HTTP."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from hpo_service.client import HPOClient, ProblemError
from tests.api.test_refine import BEST, PROBLEM, by_name, global_study, problem, with_history

OFFSETS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)
TARGET = {"width": 1024, "depth": 16}


def rungs(client: HPOClient, study_id: str, **body: Any) -> list[dict[str, Any]]:
    out = client.request("POST", f"/v1/studies/{study_id}/rungs", json={"target": TARGET, **body})
    studies: list[dict[str, Any]] = out["studies"]
    return studies


def test_one_rung_per_depth_sweeps_the_lr_with_the_rest_pinned(client: HPOClient) -> None:
    parent, best = with_history(client)
    created = rungs(client, parent["id"])
    # The proxy is w256 d4: its own depth, then doubling up to the target's 16.
    assert [s["scale"]["proxy"]["depth"] for s in created] == [4, 8, 16]
    for study in created:
        assert study["family"] == "gpt"
        assert study["scale"]["proxy"]["width"] == 256
        assert study["scale"]["base"] == {"width": 256, "depth": 4}
        assert study["max_trials"] == 0
        assert study["state"] == "active"
        depth = study["scale"]["proxy"]["depth"]
        assert study["metadata"]["rung"] == {"param": "lr", "width": 256, "depth": depth}
        assert study["metadata"]["parent_study"] == parent["id"]
        assert study["metadata"]["rung_of_trial"] == best["id"]
        params = by_name(study)
        assert (params["lr"]["low"], params["lr"]["high"]) == (
            pytest.approx(8e-3 / 4),
            pytest.approx(8e-3 * 2),
        )
        for name, value in BEST.items():
            if name != "lr":
                assert (params[name]["type"], params[name]["values"]) == ("ordinal", [value])
        assert study["trial_counts"]["requested"] == len(OFFSETS) * 2
        assert sum(study["trial_counts"].values()) == len(OFFSETS) * 2
        queued = client.request("GET", f"/v1/studies/{study['id']}/trials?page_size=100")["items"]
        lrs = sorted(t["params"]["lr"] for t in queued)
        assert lrs == pytest.approx(sorted(8e-3 * 2.0**o for o in OFFSETS for _ in range(2)))
        for t in queued:
            assert {k: v for k, v in t["params"].items() if k != "lr"} == {
                k: v for k, v in BEST.items() if k != "lr"
            }
            assert t["source"] == "user"


def _loss(lr: float, depth: int, rng: np.random.Generator) -> float:
    """An LR valley whose optimum moves as depth^-0.5 from the proxy's 8e-3 at depth 4."""
    optimum = math.log2(8e-3) - 0.5 * math.log2(depth / 4)
    return 2.0 + 0.02 * (math.log2(lr) - optimum) ** 2 + float(rng.normal(0, 0.002))


def test_finished_rungs_complete_and_correct_the_extrapolation(
    client: HPOClient, worker: HPOClient
) -> None:
    parent, _ = with_history(client)
    created = rungs(client, parent["id"])
    rng = np.random.default_rng(0)
    for study in created:
        depth = study["scale"]["proxy"]["depth"]
        leased = worker.suggest(study["id"], "w1", 32)["trials"]
        assert len(leased) == len(OFFSETS) * 2  # the queue and nothing else
        for t in leased:
            worker.complete(t["id"], "w1", {"val_loss": _loss(t["params"]["lr"], depth, rng)})
        assert client.get_study(study["id"])["state"] == "completed"
    ladder = client.request("GET", "/v1/families/gpt/ladder")
    lr = next(p for p in ladder["parameters"] if p["param"] == "lr")
    assert lr["verdict"] == "drifts"
    assert lr["exponents"]["depth"] == pytest.approx(-0.5, abs=0.1)
    assert {p["study_id"] for p in lr["points"]} == {s["id"] for s in created}

    plain = client.request(
        "POST",
        f"/v1/studies/{parent['id']}/extrapolate",
        json={"target": TARGET, "use_ladder": False},
    )["params"]
    corrected = client.request(
        "POST", f"/v1/studies/{parent['id']}/extrapolate", json={"target": TARGET}
    )
    # Depth 4 → 16 at depth^-0.5: half the plain rule's LR, on every LR the bare name sets.
    ratio = corrected["params"]["lr.hidden"] / plain["lr.hidden"]
    assert ratio == pytest.approx(0.5, rel=0.15)
    rule = next(r for r in corrected["rules"] if r["param"] == "lr.hidden")
    assert "ladder" in rule["rule"]


def test_custom_grid_replicates_and_centre(client: HPOClient) -> None:
    parent, best = with_history(client)
    created = rungs(client, parent["id"], offsets=[-1, 0, 1], replicates=1, param="mult.readout")
    assert created[0]["trial_counts"]["requested"] == 3
    params = by_name(created[0])
    assert params["mult.readout"]["low"] == pytest.approx(1.0)
    assert params["mult.readout"]["high"] == pytest.approx(4.0)
    assert params["lr"]["values"] == [8e-3]
    # Centred on a named trial (a finalist re-run may prefer one that is not the best).
    worse = next(
        t
        for t in client.request("GET", f"/v1/studies/{parent['id']}/trials")["items"]
        if t["id"] != best["id"]
    )
    again = rungs(client, parent["id"], trial_id=worse["id"])
    assert by_name(again[0])["lr"]["low"] == pytest.approx(worse["params"]["lr"] / 4)
    assert again[0]["metadata"]["rung_of_trial"] == worse["id"]
    other, _ = with_history(client, name="other")
    err = problem(lambda: rungs(client, other["id"], trial_id=worse["id"]))
    assert err.status == 404


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"target": {"depth": 4}}, ["body", "target", "depth"]),
        ({"target": {"depth": 2}}, ["body", "target", "depth"]),
        ({"target": TARGET, "param": "wd"}, ["body", "param"]),
        ({"target": TARGET, "param": "nope"}, ["body", "param"]),
        ({"target": TARGET, "offsets": [0, 0, 1]}, ["body", "offsets"]),
        ({"target": TARGET, "offsets": [0, 1]}, ["body", "offsets"]),
        ({"target": TARGET, "replicates": 0}, ["body", "replicates"]),
        ({"target": TARGET, "offsets": list(range(-15, 15)), "replicates": 8}, ["body", "offsets"]),
        ({}, ["body", "target"]),
    ],
)
def test_bad_requests_are_422_and_create_nothing(
    client: HPOClient, body: dict[str, Any], loc: list[str]
) -> None:
    parent, _ = with_history(client)
    err = problem(lambda: client.request("POST", f"/v1/studies/{parent['id']}/rungs", json=body))
    assert err.status == 422
    assert loc in [e["loc"][: len(loc)] for e in err.body.get("errors", [])], err.body
    assert [s["id"] for s in client.list_studies()["items"]] == [parent["id"]]


def test_a_study_without_family_scale_or_results_is_refused(
    client: HPOClient, worker: HPOClient
) -> None:
    def post(study_id: str) -> ProblemError:
        return problem(
            lambda: client.request("POST", f"/v1/studies/{study_id}/rungs", json={"target": TARGET})
        )

    lonely, _ = with_history(client, family=None)
    assert post(lonely["id"]).status == 422
    unscaled = global_study(client, scale=None, name="no-scale")
    client.add_trial(unscaled["id"], BEST, {"val_loss": 1.0})
    assert post(unscaled["id"]).status == 422
    fresh = global_study(client, name="fresh")
    err = post(fresh["id"])
    assert err.status == 409
    assert err.body["type"] == PROBLEM + "no-completed-trial"
    parent, _ = with_history(client, name="ok")
    denied = problem(
        lambda: worker.request("POST", f"/v1/studies/{parent['id']}/rungs", json={"target": TARGET})
    )
    assert denied.status == 403


def test_another_tenants_study_is_not_found(client: HPOClient, app_client: Any, keys: Any) -> None:
    parent, _ = with_history(client)
    other = HPOClient(api_key=keys.other_client, http=app_client)
    err = problem(
        lambda: other.request("POST", f"/v1/studies/{parent['id']}/rungs", json={"target": TARGET})
    )
    assert err.status == 404
