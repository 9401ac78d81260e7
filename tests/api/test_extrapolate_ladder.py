"""``POST /extrapolate`` with the family ladder: drift over depth, per-role verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpo_service.client import HPOClient, ProblemError

FAMILY = "ladder-e2e"
STEPS = {"batch_size": 256, "tokens": 256 * 300}
TARGET = {"width": 256, "depth": 8}


def _scale(width: int, depth: int) -> dict:
    return {"parameterization": "completep", "proxy": {"width": width, "depth": depth, **STEPS}}


def _log(name: str, low: float, high: float) -> dict:
    return {"name": name, "type": "float", "low": low, "high": high, "scale": "log"}


def _lr_study(client: HPOClient, depth: int, optimum: float, seed: int) -> str:
    """A global-LR study at w32 and ``depth`` whose loss is a parabola in log2 LR."""
    rng = np.random.default_rng(seed)
    sid = client.create_study(
        {
            "name": f"d{depth}",
            "family": FAMILY,
            "objective": {"metric": "val_loss"},
            "space": {"parameters": [_log("lr", 1e-4, 1.0)]},
            "algorithm": "random",
            "scale": _scale(32, depth),
        }
    )["id"]
    trials = []
    for _ in range(30):
        lr = optimum * 2.0 ** rng.uniform(-2, 2)
        loss = 2.3 + 0.05 * math.log2(lr / optimum) ** 2 + rng.normal(0, 0.001)
        trials.append({"params": {"lr": lr}, "result": {"metrics": {"val_loss": loss}}})
    client.add_trials(sid, trials)
    return str(sid)


def _family_with_depth_drift(client: HPOClient) -> str:
    """Optimum 0.04 at depth 2, rising as depth^0.4 (the rules predict no move)."""
    ids = [_lr_study(client, d, 0.04 * (d / 2) ** 0.4, seed=d) for d in (2, 4, 8)]
    return ids[0]


def _hidden_lr(body: dict) -> float:
    return float(body["params"]["lr.hidden"])


def test_the_ladder_corrects_the_global_lr_by_default_and_says_so(client: HPOClient) -> None:
    sid = _family_with_depth_drift(client)
    plain = client.request(
        "POST", f"/v1/studies/{sid}/extrapolate", json={"target": TARGET, "use_ladder": False}
    )
    default = client.request("POST", f"/v1/studies/{sid}/extrapolate", json={"target": TARGET})
    octaves = math.log2(_hidden_lr(default) / _hidden_lr(plain))
    assert abs(octaves - 0.4 * 2) < 0.25  # depth 2 -> 8 is two octaves of depth
    rule = next(r for r in default["rules"] if r["param"] == "lr.hidden")
    assert "ladder: fitted drift of 'lr'" in rule["rule"]
    assert not any("ladder" in r["rule"] for r in plain["rules"])
    ladder = client.request("GET", f"/v1/families/{FAMILY}/ladder")
    lr = next(p for p in ladder["parameters"] if p["param"] == "lr")
    assert lr["verdict"] == "drifts"
    assert set(lr["exponents"]) == {"depth"}


def test_without_other_shapes_the_default_is_the_plain_rules(client: HPOClient) -> None:
    sid = _lr_study(client, 2, 0.04, seed=1)
    default = client.request("POST", f"/v1/studies/{sid}/extrapolate", json={"target": TARGET})
    forced = client.request(
        "POST", f"/v1/studies/{sid}/extrapolate", json={"target": TARGET, "use_ladder": True}
    )
    assert not any("ladder" in r["rule"] for r in default["rules"])
    assert default["params"] == forced["params"]  # one shape: nothing fitted


def test_a_refined_study_hands_out_global_values_for_roles_off_the_ladder(
    client: HPOClient,
) -> None:
    sid = _family_with_depth_drift(client)
    parent_best = client.best(sid)[0]
    child = client.request(
        "POST", f"/v1/studies/{sid}/refine", json={"roles": {"lr": ["embedding", "readout"]}}
    )
    # A per-module result far from the global LR: the ladder has no width rungs for it.
    best = parent_best["params"]["lr"]
    params = {"lr.embedding": best * 3.5, "lr.readout": best * 0.3, "lr": best}
    client.add_trial(child["id"], params, {"val_loss": 1.0})
    body = client.request("POST", f"/v1/studies/{child['id']}/extrapolate", json={"target": TARGET})
    rule = next(r for r in body["rules"] if r["param"] == "lr.embedding")
    assert "kept at the global value (the parent study's 'lr')" in rule["rule"]
    assert body["params"]["lr.embedding"] == body["params"]["lr.bias"]
    assert body["params"]["lr.embedding"] < best * 3
    plain = client.request(
        "POST",
        f"/v1/studies/{child['id']}/extrapolate",
        json={"target": TARGET, "use_ladder": False},
    )
    assert plain["params"]["lr.embedding"] == best * 3.5


def test_use_ladder_must_be_a_boolean(client: HPOClient) -> None:
    sid = _lr_study(client, 2, 0.04, seed=2)
    with pytest.raises(ProblemError) as err:
        client.request(
            "POST",
            f"/v1/studies/{sid}/extrapolate",
            json={"target": TARGET, "use_ladder": "sometimes"},
        )
    assert err.value.status == 422
