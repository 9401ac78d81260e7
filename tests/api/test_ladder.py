from __future__ import annotations

import math

from hpo_service.client import HPOClient

SPACE = {
    "parameters": [
        {"name": "lr.hidden", "type": "float", "low": 1e-8, "high": 1.0, "scale": "log"},
    ]
}


def _rung(client: HPOClient, family: str, width: int, optimum: float) -> None:
    s = client.create_study(
        {
            "name": f"w{width}",
            "family": family,
            "objective": {"metric": "val_loss"},
            "space": SPACE,
            "algorithm": "random",
            "scale": {"parameterization": "mup", "proxy": {"width": width, "depth": 4}},
        }
    )
    trials = []
    for k in range(-12, 13):
        lr = optimum * 2 ** (k / 2)
        loss = 1.0 + (math.log2(lr) - math.log2(optimum)) ** 2 / 10
        trials.append({"params": {"lr.hidden": lr}, "result": {"metrics": {"val_loss": loss}}})
    client.add_trials(s["id"], trials)


def test_ladder_says_transfers_when_the_rule_explains_the_optimum(client: HPOClient) -> None:
    for width in (64, 128, 256, 512):
        _rung(client, "good", width, 0.01 * 64 / width)  # µP: hidden LR ∝ 1/width
    report = client.request("GET", "/v1/families/good/ladder")
    by_name = {p["param"]: p for p in report["parameters"]}
    assert by_name["lr.hidden"]["verdict"] == "transfers", by_name
    assert len(report["studies"]) == 4


def test_ladder_says_drifts_when_the_optimum_moves_against_the_rule(client: HPOClient) -> None:
    for width in (64, 128, 256, 512):
        _rung(client, "bad", width, 0.01 * (64 / width) ** 2)
    report = client.request("GET", "/v1/families/bad/ladder", params={"target": "width=4096"})
    lr = {p["param"]: p for p in report["parameters"]}["lr.hidden"]
    assert lr["verdict"] == "drifts"
    assert lr["drift_exponent"] < 0
    assert lr["trend"] is not None


def test_ladder_with_no_data(client: HPOClient, outsider: HPOClient) -> None:
    for width in (64, 256):
        _rung(client, "mine", width, 0.01)
    report = outsider.request("GET", "/v1/families/mine/ladder")
    assert report["studies"] == []


def test_family_page_shows_the_ladder_verdicts(client: HPOClient, app_client, keys) -> None:
    from tests.dashboard.conftest import login

    for width in (64, 128, 256, 512):
        _rung(client, "ui-good", width, 0.01 * 64 / width)
    login(app_client, keys.client)
    page = app_client.get("/ui/families/ui-good").text
    table = page.split('id="ladder"')[1]
    assert "lr.hidden" in table
    assert "verdict-transfers" in table
