"""GPU-pinned slots: `hpo worker --gpus` gives each slot's trials their own devices.

No GPU is needed: pinning is an environment variable, so the tests read what each
child actually saw (a file written by the command, or /proc of the proxy's child) and
compare it with the ``devices`` the trial recorded in its cost.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from hpo_service.cli.worker import main as worker_main
from hpo_service.worker.devices import DeviceSpecError, SlotPlan, detect_gpus, plan_slots
from tests.worker.conftest import Server, Workers, clean_env, wait_for

SHOW_DEVICES = r"""
import json, os, pathlib, sys, time
out = pathlib.Path(sys.argv[1]) / ("dev-" + os.environ["HPO_TRIAL_ID"])
out.write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
time.sleep(0.3)  # long enough that every slot takes a trial
print("HPO_METRIC " + json.dumps({"val_loss": float(sys.argv[2])}), flush=True)
"""


# The plan, as a pure function ----------------------------------------------------------
def test_one_slot_per_gpu_and_groups_of_gpus_per_trial() -> None:
    assert plan_slots("0,1,2,3", None, None, list) == SlotPlan(4, ("0", "1", "2", "3"))
    assert plan_slots("0,1,2,3", 2, None, list) == SlotPlan(2, ("0,1", "2,3"))
    assert plan_slots(" 5 , 7 ", None, 2, list) == SlotPlan(2, ("5", "7"))
    uuids = "GPU-8f1c2e4a-0b7d,MIG-3a9e1f00-aa11"
    assert plan_slots(uuids, None, None, list).devices == tuple(uuids.split(","))


def test_detected_gpus_are_used_when_no_flag_says_otherwise() -> None:
    assert plan_slots(None, None, None, lambda: ["0", "1"]) == SlotPlan(2, ("0", "1"))
    assert plan_slots("all", 2, None, lambda: ["4", "5", "6", "7"]).devices == ("4,5", "6,7")
    assert plan_slots(None, None, None, list) == SlotPlan(1)  # no GPU: one unpinned slot
    # An explicit --parallel alone keeps today's unpinned slots, without looking for GPUs.
    assert plan_slots(None, None, 3, lambda: pytest.fail("detection ran")) == SlotPlan(3)


@pytest.mark.parametrize(
    ("gpus", "per_trial", "parallel", "detected", "message"),
    [
        ("0,0", None, None, [], "listed twice"),
        ("0,1,2,3", 3, None, [], "does not split the 4 GPUs"),
        ("all", None, None, [], "no GPU detected"),
        (None, 2, None, [], "no GPU detected"),
        ("0,,1", None, None, [], "empty device id"),
        ("0;1", None, None, [], "not a device id"),
        ("0,1", None, None, ["2", "3"], "not among the GPUs"),
        ("0,1", None, 3, [], "--parallel 3 contradicts"),
        ("0", 0, None, [], "at least 1"),
    ],
)
def test_invalid_specs_say_what_is_wrong(
    gpus: str | None, per_trial: int | None, parallel: int | None, detected: list[str], message: str
) -> None:
    with pytest.raises(DeviceSpecError, match=message):
        plan_slots(gpus, per_trial, parallel, lambda: detected)


def test_detection_prefers_the_allocation_in_the_environment() -> None:
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, query=lambda: ["0", "1", "2"]) == [
        "2",
        "3",
    ]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}, query=lambda: ["0"]) == []
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, query=lambda: ["0"]) == []
    assert detect_gpus({}, query=lambda: ["0", "1"]) == ["0", "1"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpus", "0,0"], "listed twice"),
        (["--gpus", "0,1,2,3", "--gpus-per-trial", "3"], "does not split"),
        (["--gpus", "all"], "no GPU detected"),
    ],
)
def test_invalid_specs_exit_2_before_contacting_the_service(
    flags: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: nothing is detected
    argv = ["worker", "--server", "http://127.0.0.1:9", "--key", "k", "--study", "st"]
    assert worker_main([*argv, *flags, "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpo worker: error:")
    assert message in err


# Against a live server ------------------------------------------------------------------
def _seen(tmp: Path) -> dict[str, str]:
    return {p.name.removeprefix("dev-"): p.read_text() for p in tmp.glob("dev-*")}


def _run_command_worker(
    server: Server, workers: Workers, study: str, *flags: str, env: dict[str, str]
) -> None:
    script = workers.tmp / "show_devices.py"
    script.write_text(SHOW_DEVICES)
    command = [sys.executable, str(script), str(workers.tmp), "{lr}"]
    proc = workers.launch(
        server, server.worker_key(), study, *flags, "--", *command, worker_id="g", env=env
    )
    assert workers.wait(proc, 120) == 0, workers.logs()


def test_each_slot_sees_only_its_gpu_and_the_trial_records_it(
    sqlite_server: Server, workers: Workers
) -> None:
    study = sqlite_server.create_study(max_trials=6)
    _run_command_worker(sqlite_server, workers, study, "--gpus", "0,1", env=clean_env())
    seen = _seen(workers.tmp)
    trials = sqlite_server.trials(study)
    assert len(trials) == 6
    assert {t["state"] for t in trials} == {"completed"}
    for t in trials:
        slot = t["worker_id"].rsplit(".", 1)[1]
        assert seen[t["id"]] == t["cost"]["devices"] == {"0": "0", "1": "1"}[slot]
        assert t["cost"]["host"] == socket.gethostname()
    assert set(seen.values()) == {"0", "1"}  # both GPUs worked


def test_gpu_groups_and_detection_from_the_allocation(
    sqlite_server: Server, workers: Workers
) -> None:
    # A scheduler gave this job GPUs 4-7; no flag: one slot per GPU group of two.
    study = sqlite_server.create_study(max_trials=4)
    env = clean_env(CUDA_VISIBLE_DEVICES="4,5,6,7")
    _run_command_worker(sqlite_server, workers, study, "--gpus-per-trial", "2", env=env)
    trials = sqlite_server.trials(study)
    seen = _seen(workers.tmp)
    assert {seen[t["id"]] for t in trials} == {"4,5", "6,7"}
    assert all(seen[t["id"]] == t["cost"]["devices"] for t in trials)


def _proxy_child_environ(study: str) -> dict[str, str] | None:
    """The environment of a running proxy child of ``study``, read from /proc."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"hpo_service.worker.proxy_child" not in cmdline:
                continue
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        env = dict(
            item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
        )
        if env.get("HPO_STUDY_ID") == study:
            return env
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_pinned_proxy_trains_in_a_child_that_sees_only_its_gpu(
    sqlite_server: Server, workers: Workers
) -> None:
    study = sqlite_server.api(
        "POST",
        "/v1/studies",
        json={
            "name": "pinned-proxy",
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "space": {
                "parameters": [
                    {"name": "lr", "type": "float", "low": 1e-3, "high": 3e-2, "scale": "log"}
                ]
            },
            "algorithm": "sobol",
            "seed": 2,
            "max_trials": 2,
            "scale": {
                "parameterization": "mup",
                "proxy": {"width": 32, "depth": 2, "batch_size": 32, "tokens": 32 * 400},
            },
        },
    )["id"]
    proc = workers.launch(
        sqlite_server,
        sqlite_server.worker_key(),
        study,
        "--proxy",
        "mlp",
        "--gpus",
        "3",
        worker_id="p",
        env=clean_env(OMP_NUM_THREADS="1"),
        entry="hpo_service",
    )
    started = time.monotonic()
    env = wait_for(lambda: _proxy_child_environ(study), 120, "the proxy's child process")
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert "HPO_API_KEY" not in env
    assert workers.wait(proc, 240 - (time.monotonic() - started)) == 0, workers.logs()
    trials = sqlite_server.trials(study)
    assert {t["state"] for t in trials} == {"completed"}
    for t in trials:
        assert t["cost"]["devices"] == "3"
        assert t["result"]["metrics"]["val_loss"] > 0
        assert t["measurements"], "the child's train-loss curve arrived as measurements"
        assert t["cost"]["tokens_per_s"] > 0  # the proxy's own cost, not just the wrapper's
