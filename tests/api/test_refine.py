"""``POST /v1/studies/{id}/refine``: the per-module child of a global study, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from hpo_service.client import HPOClient, ProblemError

PROBLEM = "https://hpo-service.dev/problems/"
SCALE = {"parameterization": "completep", "proxy": {"width": 256, "depth": 4}}
GLOBAL_SPACE = {
    "parameters": [
        {"name": "lr", "type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"},
        {"name": "init_std", "type": "float", "low": 1e-3, "high": 1e-1, "scale": "log"},
        {"name": "wd", "type": "float", "low": 0.0, "high": 0.3},
        {"name": "beta2", "type": "float", "low": 0.9, "high": 0.999},
        {"name": "mult.readout", "type": "float", "low": 0.1, "high": 10.0, "scale": "log"},
        {"name": "dropout", "type": "float", "low": 0.0, "high": 0.5},
    ]
}
BEST = {"lr": 8e-3, "init_std": 0.02, "wd": 0.1, "beta2": 0.95, "mult.readout": 2.0, "dropout": 0.0}
WORSE = {**BEST, "lr": 1e-3}
DENSE_LR = [
    "hidden.attn_qkv",
    "hidden.attn_out",
    "hidden.mlp_in",
    "hidden.mlp_out",
    "embedding",
    "readout",
    "norm",
]


def global_study(client: HPOClient, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "gpt-global",
        "family": "gpt",
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "space": GLOBAL_SPACE,
        "algorithm": "random",
        "scale": SCALE,
        "seed": 3,
        **overrides,
    }
    return client.create_study(body)


def with_history(client: HPOClient, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A global study with two imported results; returns it and its best trial."""
    s = global_study(client, **overrides)
    client.add_trial(s["id"], WORSE, {"val_loss": 2.0})
    best = client.add_trial(s["id"], BEST, {"val_loss": 1.5})
    return s, best


def refine(client: HPOClient, study_id: str, **body: Any) -> dict[str, Any]:
    out: dict[str, Any] = client.request("POST", f"/v1/studies/{study_id}/refine", json=body)
    return out


def by_name(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in study["space"]["parameters"]}


def problem(call: Any) -> ProblemError:
    with pytest.raises(ProblemError) as err:
        call()
    return err.value


def test_refine_derives_per_role_ranges_around_the_best(
    app_client: TestClient, client: HPOClient
) -> None:
    parent, best = with_history(client)
    r = app_client.post(f"/v1/studies/{parent['id']}/refine", headers=client._headers)
    assert r.status_code == 201, r.text
    child = r.json()
    assert child["id"] != parent["id"]
    assert child["name"] == "gpt-global (per-module)"
    assert child["tenant"] == "acme"
    assert child["family"] == "gpt"
    assert child["scale"] == parent["scale"]
    assert child["objective"] == parent["objective"]
    assert child["algorithm"] == "local"
    assert child["seed"] == 3
    assert child["transfer"] is None
    assert child["metadata"] == {
        "parent_study": parent["id"],
        "refined_from_trial": best["id"],
        "refined_params": {
            "lr": [f"lr.{r}" for r in DENSE_LR],
            "init_std": ["init_std.hidden", "init_std.embedding", "init_std.readout"],
        },
    }
    params = by_name(child)
    factor = 2.0**2  # the default span: two octaves either side
    for role in DENSE_LR:
        p = params[f"lr.{role}"]
        assert (p["type"], p["scale"]) == ("float", "log")
        assert p["low"] == pytest.approx(8e-3 / factor)
        assert p["high"] == pytest.approx(8e-3 * factor)
        assert p["high"] > 1e-2  # beyond the parent's bound: not clipped on purpose
    for role in ("hidden", "embedding", "readout"):
        p = params[f"init_std.{role}"]
        assert (p["low"], p["high"]) == (pytest.approx(0.02 / factor), pytest.approx(0.02 * factor))
    # The bare names stay, pinned at the best, for the roles the child does not name.
    assert params["lr"]["type"] == "ordinal"
    assert params["lr"]["values"] == [8e-3]
    assert params["init_std"]["values"] == [0.02]
    # Role-free names, already per-role names and unknown names are carried over as they are.
    parent_params = by_name(parent)
    for name in ("wd", "beta2", "mult.readout", "dropout"):
        assert params[name] == parent_params[name]
    assert len(params) == 7 + 1 + 3 + 1 + 4
    assert child["trial_counts"]["requested"] == 1
    assert sum(child["trial_counts"].values()) == 1


def test_parent_best_is_the_first_trial_queued(client: HPOClient) -> None:
    parent, best = with_history(client)
    child = refine(client, parent["id"])
    (first,) = client.request("GET", f"/v1/studies/{child['id']}/trials")["items"]
    assert first["number"] == 0
    assert first["state"] == "requested"
    assert first["source"] == "user"
    assert first["result"] is None
    assert first["metadata"] == {
        "refined_from": {"study": parent["id"], "trial": best["id"]},
        "parent_value": 1.5,
    }
    expected = {f"lr.{r}": 8e-3 for r in DENSE_LR}
    expected |= {f"init_std.{r}": 0.02 for r in ("hidden", "embedding", "readout")}
    expected |= BEST
    assert first["params"] == pytest.approx(expected)


def test_the_child_leases_completes_and_extrapolates_per_role(
    client: HPOClient, worker: HPOClient
) -> None:
    parent, _ = with_history(client)
    child = refine(client, parent["id"])
    cid = child["id"]
    leased = worker.suggest(cid, "w1", 2)["trials"]
    assert [t["number"] for t in leased] == [0, 1]
    assert [t["source"] for t in leased] == ["user", "engine"]
    spec = by_name(child)
    for name, value in leased[1]["params"].items():
        p = spec[name]
        if p["type"] == "float":
            assert p["low"] <= value <= p["high"], name
        else:
            assert value in p["values"], name
    worker.complete(leased[0]["id"], "w1", {"val_loss": 1.45})
    worker.complete(leased[1]["id"], "w1", {"val_loss": 1.6})
    assert client.best(cid)[0]["id"] == leased[0]["id"]
    more = worker.suggest(cid, "w1", 1)["trials"]
    assert more
    assert more[0]["metadata"].get("designer") == "local"

    target = {"width": 1024, "depth": 16}
    out = worker.request("POST", f"/v1/studies/{cid}/extrapolate", json={"target": target})
    values = out["params"]
    # CompleteP: hidden Adam LR ∝ 1/m_N with no block-LR depth factor (α = 1); embedding,
    # readout and norm LRs keep their value; hidden init std ∝ m_N^-½.
    for role in ("hidden.attn_qkv", "hidden.attn_out", "hidden.mlp_in", "hidden.mlp_out"):
        assert values[f"lr.{role}"] == pytest.approx(8e-3 / 4)
    for role in ("embedding", "readout", "norm"):
        assert values[f"lr.{role}"] == pytest.approx(8e-3)
    assert values["init_std.hidden"] == pytest.approx(0.02 / 2)
    assert values["init_std.readout"] == pytest.approx(0.02)
    # The pinned bare lr reaches the roles the child does not name, by their own rules.
    assert values["lr.bias"] == pytest.approx(8e-3)
    assert values["lr.hidden"] == pytest.approx(8e-3 / 4)
    # The seed means what the parent's best meant: the same values at the target.
    before = client.request(
        "POST", f"/v1/studies/{parent['id']}/extrapolate", json={"target": target}
    )["params"]
    for key, value in before.items():
        assert values[key] == pytest.approx(value), key


def test_roles_span_and_options(client: HPOClient) -> None:
    parent, _ = with_history(client)
    child = refine(
        client,
        parent["id"],
        name="stage 2",
        roles={"lr": ["embedding", "hidden", "embedding"], "wd": ["hidden"], "init_std": []},
        span_octaves=1.0,
        algorithm="random",
        max_trials=12,
        keep_global=False,
    )
    assert child["name"] == "stage 2"
    assert child["algorithm"] == "random"
    assert child["max_trials"] == 12
    params = by_name(child)
    assert list(params) == [
        "lr.embedding",
        "lr.hidden",
        "init_std",
        "wd.hidden",
        "beta2",
        "mult.readout",
        "dropout",
    ]
    assert (params["lr.hidden"]["low"], params["lr.hidden"]["high"]) == (
        pytest.approx(4e-3),
        pytest.approx(16e-3),
    )
    # A linear range keeps the parent's bounds: octaves mean nothing on a linear scale.
    assert (params["wd.hidden"]["low"], params["wd.hidden"]["high"]) == (0.0, 0.3)
    assert params["init_std"] == by_name(parent)["init_std"]
    (first,) = client.request("GET", f"/v1/studies/{child['id']}/trials")["items"]
    assert first["params"]["wd.hidden"] == pytest.approx(0.1)
    assert "lr" not in first["params"]


def test_moe_defaults_and_roles_the_parent_already_names(client: HPOClient) -> None:
    space = {
        "parameters": [
            {"name": "lr", "type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"},
            {"name": "lr.embedding", "type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        ]
    }
    scale = {
        "parameterization": "moe_mup",
        "proxy": {"width": 256, "depth": 4, "experts": 8, "active_experts": 2},
    }
    s = global_study(client, space=space, scale=scale)
    client.add_trial(s["id"], {"lr": 2e-3, "lr.embedding": 5e-3}, {"val_loss": 1.0})
    child = refine(client, s["id"])
    derived = child["metadata"]["refined_params"]["lr"]
    assert derived == [
        "lr.hidden.attn_qkv",
        "lr.hidden.attn_out",
        "lr.hidden.expert_up",
        "lr.hidden.expert_down",
        "lr.router",
        "lr.readout",
        "lr.norm",
    ]
    assert by_name(child)["lr.embedding"] == {**space["parameters"][1], "conditions": None}
    (first,) = client.request("GET", f"/v1/studies/{child['id']}/trials")["items"]
    assert first["params"]["lr.embedding"] == 5e-3
    assert first["params"]["lr.router"] == 2e-3


def test_the_best_respects_goal_and_constraints(client: HPOClient) -> None:
    s = global_study(
        client,
        objective={"metric": "acc", "goal": "maximize"},
        constraints=[{"metric": "mem_gb", "op": "<=", "bound": 10}],
    )
    client.add_trial(s["id"], {**BEST, "lr": 5e-3}, {"acc": 0.9, "mem_gb": 20})
    feasible = client.add_trial(s["id"], {**BEST, "lr": 2e-3}, {"acc": 0.8, "mem_gb": 5})
    client.add_trial(s["id"], {**BEST, "lr": 1e-3}, {"acc": 0.7, "mem_gb": 5})
    child = refine(client, s["id"])
    assert child["metadata"]["refined_from_trial"] == feasible["id"]
    assert child["constraints"] == s["constraints"]
    assert by_name(child)["lr"]["values"] == [2e-3]


def test_refusals(client: HPOClient, worker: HPOClient, outsider: HPOClient) -> None:
    s = global_study(client)
    err = problem(lambda: refine(client, s["id"]))
    assert (err.status, err.body["type"]) == (409, PROBLEM + "no-completed-trial")
    failed = worker.suggest(s["id"], "w", 1)["trials"][0]
    worker.fail(failed["id"], "w", "diverged")
    assert problem(lambda: refine(client, s["id"])).status == 409

    plain = client.create_study(
        {"name": "p", "objective": {"metric": "val_loss"}, "space": GLOBAL_SPACE}
    )
    client.add_trial(plain["id"], BEST, {"val_loss": 1.0})
    err = problem(lambda: refine(client, plain["id"]))
    assert (err.status, err.body["type"]) == (422, PROBLEM + "validation-error")
    assert "no 'scale' configuration" in err.body["detail"]

    per_role = global_study(
        client,
        space={
            "parameters": [
                {"name": "lr.hidden", "type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"}
            ]
        },
    )
    client.add_trial(per_role["id"], {"lr.hidden": 1e-3}, {"val_loss": 1.0})
    err = problem(lambda: refine(client, per_role["id"]))
    assert err.status == 422
    assert "no global role-dependent name" in err.body["detail"]

    parent, _ = with_history(client)
    pid = parent["id"]
    err = problem(lambda: refine(client, pid, roles={"beta2": ["hidden"], "lr": ["hiden"]}))
    assert err.status == 422
    locs = [e["loc"] for e in err.errors]
    assert ["body", "roles", "beta2"] in locs
    assert ["body", "roles", "lr", 0] in locs
    err = problem(lambda: refine(client, pid, roles={"lr": [], "init_std": []}))
    assert err.status == 422
    assert "nothing to refine" in err.body["detail"]
    assert problem(lambda: refine(client, pid, span_octaves=0)).status == 422
    assert problem(lambda: refine(client, pid, colour="blue")).status == 422
    err = problem(lambda: refine(client, pid, algorithm="nope"))
    assert err.body["type"] == PROBLEM + "unknown-algorithm"

    assert problem(lambda: refine(client, "st_" + "0" * 24)).status == 404
    assert problem(lambda: refine(client, "not-an-id")).status == 404
    assert problem(lambda: refine(outsider, pid)).status == 404
    assert problem(lambda: refine(worker, pid)).status == 403
    assert len(client.list_studies(family="gpt")["items"]) == 3  # nothing was created


def test_admin_refines_into_the_parent_tenant(client: HPOClient, admin: HPOClient) -> None:
    parent, _ = with_history(client)
    child = refine(admin, parent["id"])
    assert child["tenant"] == "acme"
    assert client.get_study(child["id"])["metadata"]["parent_study"] == parent["id"]


def test_idempotency_key_replays_the_child(app_client: TestClient, client: HPOClient) -> None:
    parent, _ = with_history(client)
    url = f"/v1/studies/{parent['id']}/refine"
    headers = {**client._headers, "Idempotency-Key": "refine-1"}
    first = app_client.post(url, json={"span_octaves": 1.0}, headers=headers)
    again = app_client.post(url, json={"span_octaves": 1.0}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = app_client.post(url, json={"span_octaves": 2.0}, headers=headers)
    assert other.status_code == 409
    assert other.json()["type"] == PROBLEM + "idempotency-conflict"
    assert len(client.list_studies(family="gpt")["items"]) == 2


def test_openapi_lists_the_route(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()
    op = doc["paths"]["/v1/studies/{study_id}/refine"]["post"]
    assert "201" in op["responses"]
    assert {"404", "409", "422"} <= set(op["responses"])
    assert op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/StudyRead"
    )
    body = doc["components"]["schemas"]["RefineRequest"]["properties"]
    assert set(body) == {"name", "roles", "span_octaves", "algorithm", "max_trials", "keep_global"}
