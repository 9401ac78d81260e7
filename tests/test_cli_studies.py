"""`hpo studies` and `hpo trials` against a live `hpo serve`, over HTTP through the SDK.

One server for the module (it starts slowly); each test makes its own studies under a
family of its own, so listings see only that test's studies.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hpo_service.cli.main import main
from hpo_service.cli.studies import SpecFileError, load_spec
from hpo_service.client import HPOClient
from tests.builders import study
from tests.local_server import free_port, launch, serve_argv, stop_process, wait_until_up

ROOT = Path(__file__).resolve().parents[1]


class Live:
    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key

    def hpo(self, *argv: str) -> int:
        """Run `hpo ARGV --server URL --key KEY` in this process."""
        return main([*argv, "--server", self.url, "--key", self.key])

    def client(self) -> HPOClient:
        return HPOClient(self.url, self.key)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("cli-studies")
    port = free_port()
    key = f"hpo_key_{secrets.token_hex(12)}_{secrets.token_hex(32)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(PYTHONPATH=str(ROOT), HPO_BOOTSTRAP_ADMIN_KEY=key, HPO_LOG_LEVEL="warning")
    log = workdir / "server.log"
    proc = launch(
        serve_argv(port, database_url=f"sqlite:///{workdir / 'hpo.db'}"),
        env=env,
        cwd=workdir,
        log=log,
    )
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/healthz", timeout=120, request_timeout=2)
    except Exception:
        stop_process(proc)
        raise AssertionError(f"server did not start:\n{log.read_text()[-3000:]}") from None
    yield Live(f"http://127.0.0.1:{port}", key)
    stop_process(proc)


@pytest.fixture
def family() -> str:
    return f"fam-{secrets.token_hex(4)}"


def write_json(tmp_path: Path, body: Any, name: str = "spec.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return str(path)


def create(live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str], **spec: Any) -> str:
    path = write_json(tmp_path, study(**spec), name=f"spec-{secrets.token_hex(3)}.json")
    assert live.hpo("studies", "create", "--file", path, "--json") == 0
    return str(json.loads(capsys.readouterr().out)["id"])


YAML_SPEC = """\
name: yaml-study
family: {family}
objective: {{metric: val_loss, goal: minimize}}
algorithm: random
max_trials: 12
space:
  parameters:
    - {{name: lr, type: float, low: 1.0e-5, high: 0.1, scale: log}}
    - {{name: layers, type: int, low: 1, high: 4}}
"""


# Create -----------------------------------------------------------------------------------
def test_create_from_json_prints_the_study(
    live: Live, tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path, study(name="json-study", family=family, max_trials=5))
    assert live.hpo("studies", "create", "--file", path) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["id"].startswith("st")
    assert (lines["name"], lines["family"], lines["state"]) == ("json-study", family, "active")
    assert lines["max_trials"] == "5"
    assert lines["parameters"] == "lr, layers, optimizer, batch_size, ns_steps"
    with live.client() as client:
        assert client.studies.get(lines["id"]).name == "json-study"


def test_create_from_yaml(
    live: Live, tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(YAML_SPEC.format(family=family))
    assert live.hpo("studies", "create", "--file", str(path), "--json") == 0
    created = json.loads(capsys.readouterr().out)
    assert (created["name"], created["family"], created["max_trials"]) == (
        "yaml-study",
        family,
        12,
    )
    lr = created["space"]["parameters"][0]
    assert (lr["name"], lr["scale"], lr["low"]) == ("lr", "log", 1e-5)


def test_a_bad_spec_exits_2_with_the_servers_detail(
    live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = study(space={"parameters": [{"name": "lr", "type": "float", "low": 1, "high": 0}]})
    assert live.hpo("studies", "create", "--file", write_json(tmp_path, bad)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    first = captured.err.splitlines()[0]
    assert first.startswith("error: Invalid input: ")
    assert "space" in first


def test_a_spec_that_is_not_an_object_or_not_json_never_reaches_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would fail
    listed = write_json(tmp_path, [study()])
    broken = tmp_path / "broken.json"
    broken.write_text("{name: ")
    for path in (listed, str(broken), str(tmp_path / "missing.json")):
        assert main(["studies", "create", "--file", path, "--server", nowhere]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ")
        assert "cannot reach" not in err
    assert "must hold one object" in _err_of(listed, nowhere, capsys)
    assert "not valid JSON" in _err_of(str(broken), nowhere, capsys)


def _err_of(path: str, server: str, capsys: pytest.CaptureFixture[str]) -> str:
    main(["studies", "create", "--file", path, "--server", server])
    return capsys.readouterr().err


def test_yaml_without_pyyaml_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spec.yml"
    path.write_text("name: x\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` fail
    with pytest.raises(SpecFileError, match="needs PyYAML"):
        load_spec(str(path))


# List -------------------------------------------------------------------------------------
def test_list_filters_and_prints_a_table_or_json(
    live: Live, tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = create(live, tmp_path, capsys, name="alpha", family=family)
    second = create(live, tmp_path, capsys, name="beta", family=family)
    create(live, tmp_path, capsys, name="alpha", family=f"{family}-other")
    with live.client() as client:
        client.studies.update(second, state="paused")

    assert live.hpo("studies", "list", "--family", family) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "FAMILY",
        "STATE",
        "ALGORITHM",
        "TRIALS",
        "DONE",
        "CREATED",
    ]
    assert [r.split()[:4] for r in rows] == [
        [first, "alpha", family, "active"],
        [second, "beta", family, "paused"],
    ]

    assert live.hpo("studies", "list", "--family", family, "--state", "paused", "--json") == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)] == [second]
    assert live.hpo("studies", "list", "--family", family, "--name", "alpha", "--json") == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)] == [first]
    assert live.hpo("studies", "list", "--family", family, "--limit", "1", "--json") == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)] == [first]


def test_list_reads_server_and_key_from_the_environment(
    live: Live,
    tmp_path: Path,
    family: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sid = create(live, tmp_path, capsys, family=family)
    monkeypatch.setenv("HPO_SERVER", live.url)
    monkeypatch.setenv("HPO_API_KEY", live.key)
    assert main(["studies", "list", "--family", family, "--json"]) == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)] == [sid]


def test_an_empty_list_says_so(live: Live, family: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert live.hpo("studies", "list", "--family", family) == 0
    assert capsys.readouterr().out == "no studies\n"


def test_on_a_terminal_the_table_is_drawn_by_rich(
    live: Live,
    tmp_path: Path,
    family: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create(live, tmp_path, capsys, name="[bold]not-markup[/bold]", family=family)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")  # room for every column, so no cell wraps
    assert live.hpo("studies", "list", "--family", family) == 0
    out = capsys.readouterr().out
    assert "━" in out or "─" in out  # a box, not plain columns
    assert "[bold]not-markup[/bold]" in out  # names are shown as they are


# Show and trials --------------------------------------------------------------------------
def _with_trials(live: Live, tmp_path: Path, family: str, capsys: Any) -> str:
    sid = create(live, tmp_path, capsys, name="shown", family=family, max_trials=10)
    with live.client() as client:
        for lr, loss in ((0.01, 0.9), (0.001, 0.4), (0.05, 1.7)):
            client.trials.add(
                sid,
                {"lr": lr, "layers": 2, "optimizer": "adamw", "batch_size": 32},
                {"val_loss": loss},
            )
        client.trials.add(sid, {"lr": 0.02, "layers": 3, "optimizer": "adamw", "batch_size": 16})
    return sid


def test_show_prints_state_counts_and_the_best_trial(
    live: Live, tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = _with_trials(live, tmp_path, family, capsys)
    assert live.hpo("studies", "show", sid) == 0
    out = capsys.readouterr().out
    pairs, counts, best = out.split("\n\n")
    assert "state       active" in pairs.splitlines()
    assert "objective   val_loss (minimize)" in pairs.splitlines()
    count_rows = dict(line.split() for line in counts.splitlines()[1:])
    assert count_rows == {
        "requested": "1",
        "active": "0",
        "stopping": "0",
        "completed": "3",
        "failed": "0",
        "infeasible": "0",
        "total": "4",
    }
    header, row = best.splitlines()
    assert header.split() == ["BEST", "val_loss", "PARAMS"]
    assert row.split() == ["#1", "0.4", "lr=0.001", "layers=2", "optimizer=adamw", "batch_size=32"]

    assert live.hpo("studies", "show", sid, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["study"]["id"] == sid
    assert [(t["number"], t["result"]["metrics"]) for t in shown["best"]] == [
        (1, {"val_loss": 0.4})
    ]


def test_show_before_any_result_says_there_is_no_best(
    live: Live, tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = create(live, tmp_path, capsys, family=family)
    assert live.hpo("studies", "show", sid) == 0
    assert capsys.readouterr().out.endswith("best: none yet (no completed trial)\n")


def test_trials_list_filters_orders_and_prints_json(
    live: Live, tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = _with_trials(live, tmp_path, family, capsys)
    assert live.hpo("trials", "list", "--study", sid) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "NUMBER",
        "STATE",
        "VAL_LOSS",
        "ATTEMPT",
        "WORKER",
        "SOURCE",
        "PARAMS",
    ]
    assert [r.split()[:3] for r in rows] == [
        ["0", "completed", "0.9"],
        ["1", "completed", "0.4"],
        ["2", "completed", "1.7"],
        ["3", "requested", "-"],
    ]

    assert live.hpo("trials", "list", "--study", sid, "--state", "completed", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["number"] for t in listed] == [0, 1, 2]
    assert listed[1]["params"] == {"lr": 0.001, "layers": 2, "optimizer": "adamw", "batch_size": 32}

    argv = ["trials", "list", "--study", sid, "--state", "completed", "--order-by", "value"]
    assert live.hpo(*argv, "--json") == 0
    assert [t["number"] for t in json.loads(capsys.readouterr().out)] == [1, 0, 2]


# Errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [("studies", "show", "st_doesnotexist"), ("trials", "list", "--study", "st_doesnotexist")],
)
def test_an_unknown_id_exits_2_with_the_problem(
    live: Live, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert live.hpo(*argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert "st_doesnotexist" in captured.err


def test_a_bad_state_filter_is_the_servers_validation_problem(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    assert live.hpo("studies", "list", "--state", "sleeping") == 2
    assert capsys.readouterr().err.startswith("error: Invalid input: ")


def test_a_wrong_key_exits_2(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["studies", "list", "--server", live.url, "--key", "hpo_key_wrong"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_an_unreachable_server_exits_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["studies", "list", "--server", url, "--key", "k"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the service at {url}: ")
    assert "Traceback" not in err


def test_rungs_creates_the_depth_ladder_and_lists_it(
    live: Live, tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = study(family=family)
    spec["scale"] = {"parameterization": "completep", "proxy": {"width": 64, "depth": 2}}
    spec["space"] = {
        "parameters": [
            {"name": "lr", "type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
            {"name": "wd", "type": "float", "low": 0.0, "high": 0.3},
        ]
    }
    path = write_json(tmp_path, spec)
    assert live.hpo("studies", "create", "--file", path, "--json") == 0
    sid = json.loads(capsys.readouterr().out)["id"]
    result = {"params": {"lr": 0.01, "wd": 0.1}, "result": {"metrics": {"val_loss": 1.0}}}
    httpx.post(
        f"{live.url}/v1/studies/{sid}/trials",
        json=result,
        headers={"Authorization": f"Bearer {live.key}"},
    ).raise_for_status()
    assert live.hpo("studies", "rungs", sid, "--target", "width=512,depth=8") == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["ID", "NAME", "WIDTH", "DEPTH", "QUEUED"]
    assert [r.split()[-3:] for r in rows] == [
        ["128", "2", "14"],
        ["128", "4", "14"],
        ["128", "8", "14"],
    ]
    assert live.hpo("studies", "rungs", sid, "--target", "depth=2") == 2
    assert "depth" in capsys.readouterr().err
