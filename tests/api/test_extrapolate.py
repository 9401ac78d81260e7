from __future__ import annotations

import json

import pytest

from hpo_service.cli.main import main
from hpo_service.client import HPOClient, ProblemError

SCALE = {
    "parameterization": "mup",
    "proxy": {"width": 256, "depth": 4, "batch_size": 32, "tokens": 2e7},
}
SPACE = {
    "parameters": [
        {"name": "lr.hidden", "type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        {"name": "init_std.readout", "type": "float", "low": 1e-3, "high": 1.0, "scale": "log"},
        {"name": "dropout", "type": "float", "low": 0.0, "high": 0.5},
    ]
}


def mup_study(client: HPOClient) -> dict:
    return client.create_study(
        {
            "name": "mup",
            "objective": {"metric": "val_loss"},
            "space": SPACE,
            "algorithm": "random",
            "scale": SCALE,
        }
    )


def test_extrapolate_best_trial_by_the_rules(client: HPOClient, worker: HPOClient) -> None:
    s = mup_study(client)
    assert s["scale"]["parameterization"] == "mup"
    client.add_trial(
        s["id"], {"lr.hidden": 0.01, "init_std.readout": 0.1, "dropout": 0.1}, {"val_loss": 1.0}
    )
    worse = client.add_trial(
        s["id"], {"lr.hidden": 0.05, "init_std.readout": 0.1, "dropout": 0.1}, {"val_loss": 2.0}
    )
    out = worker.request(
        "POST", f"/v1/studies/{s['id']}/extrapolate", json={"target": {"width": 1024}}
    )
    assert out["multipliers"] == {"width": 4.0, "depth": 1.0, "batch": 1.0, "duration": 1.0}
    assert out["params"]["lr.hidden"] == pytest.approx(0.0025)  # µP hidden Adam LR ∝ 1/width
    assert out["params"]["dropout"] == 0.1
    assert {r["param"] for r in out["rules"]} >= {"lr.hidden", "init_std.readout", "dropout"}
    named = worker.request(
        "POST",
        f"/v1/studies/{s['id']}/extrapolate",
        json={"target": {"width": 1024}, "trial_id": worse["id"]},
    )
    assert named["params"]["lr.hidden"] == pytest.approx(0.0125)


def test_extrapolate_errors(client: HPOClient) -> None:
    s = mup_study(client)
    with pytest.raises(ProblemError) as err:
        client.request(
            "POST", f"/v1/studies/{s['id']}/extrapolate", json={"target": {"width": 1024}}
        )
    assert err.value.status == 409
    plain = client.create_study({"name": "p", "objective": {"metric": "val_loss"}, "space": SPACE})
    with pytest.raises(ProblemError) as err:
        client.request("POST", f"/v1/studies/{plain['id']}/extrapolate", json={"target": {}})
    assert err.value.status == 422


def test_bad_scale_is_422_with_location(client: HPOClient) -> None:
    with pytest.raises(ProblemError) as err:
        client.create_study(
            {
                "name": "x",
                "objective": {"metric": "l"},
                "space": SPACE,
                "scale": {"parameterization": "mupp", "proxy": {"width": 256}},
            }
        )
    assert err.value.status == 422
    assert ["body", "scale", "parameterization"] in [e["loc"] for e in err.value.errors]


@pytest.mark.committed  # the CLI opens the database itself
def test_cli_extrapolate(client: HPOClient, db, capsys) -> None:
    s = mup_study(client)
    client.add_trial(
        s["id"], {"lr.hidden": 0.01, "init_std.readout": 0.1, "dropout": 0.0}, {"val_loss": 1.0}
    )
    assert (
        main(
            [
                "extrapolate",
                "--study",
                s["id"],
                "--target",
                "width=4096,depth=4",
                "--database-url",
                db.url,
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["lr.hidden"] == pytest.approx(0.01 / 16)
