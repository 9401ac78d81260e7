"""Ray: `hpo ray-workers` on a local Ray cluster, and Tune driven by HPOServiceSearcher.

The cluster is a real `ray start --head` with two fake GPUs (Ray hands them out by id,
it does not need the hardware), and the service a real `hpo serve`. The server's lease
is 60 s on purpose: every hand-back these tests wait for must come from the code under
test (a release, a restarted actor resuming its lease), never from a lease expiring.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI"):
    import ray  # in CI the dev extra installs Ray: its absence is a failure, not a skip
else:
    ray = pytest.importorskip("ray")

from ray import tune

from hpo_service.cli.main import main as hpo_main
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.domain import Role
from hpo_service.integrations.ray_tune import (
    HPOServiceSearcher,
    convert_search_space,
    result_metrics,
)
from hpo_service.integrations.ray_workers import actor_worker_id
from hpo_service.services import api_keys
from tests.local_server import free_port, running
from tests.worker.conftest import ROOT, Server, clean_env, start_server, wait_for

LEASE = 60.0
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

# Each trial records the GPUs it was given, then (first trials only) waits until both
# fake GPUs have been seen, so the two actors provably ran trials at the same time.
GPU_TRIAL = r"""
import json, os, pathlib, sys, time
here = pathlib.Path(sys.argv[1])
tid = os.environ["HPO_TRIAL_ID"]
devices = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
(here / f"gpu-{tid}").write_text(devices)
(here / f"seen-{devices}").write_text(tid)
deadline = time.time() + 60
while not all((here / f"seen-{g}").exists() for g in ("0", "1")):
    if time.time() > deadline:
        sys.exit("the other GPU never ran a trial")
    time.sleep(0.05)
params = json.loads(os.environ["HPO_PARAMS"])
print("HPO_METRIC " + json.dumps({"val_loss": params["lr"], "gpu": int(devices)}), flush=True)
"""

# Writes its pid (and its parent's, the actor's) and holds until killed, or finishes at
# once when the file `go-<trial>` exists.
HOLD_TRIAL = r"""
import json, os, pathlib, sys, time
here = pathlib.Path(sys.argv[1])
tid = os.environ["HPO_TRIAL_ID"]
runs = len(list(here.glob(f"run-{tid}-*")))
(here / f"run-{tid}-{runs}").write_text(f"{os.getpid()} {os.getppid()} {os.environ['HPO_ATTEMPT']}")
while not (here / f"go-{tid}").exists():
    time.sleep(0.05)
print("HPO_METRIC " + json.dumps({"val_loss": 1.0}), flush=True)
"""


def _key(server: Server, role: Role) -> str:
    db = Database(server.database_url)
    try:
        return api_keys.create_key(db, role=role, tenant="default", name="ray", now=utcnow()).key
    finally:
        db.dispose()


# Fixtures ----------------------------------------------------------------------------------
class RayCluster:
    """`ray start --head --block` with 2 CPUs and 2 fake GPUs, stopped by its own pid.

    `ray stop` would stop every Ray cluster of this user on the machine; signalling our
    `ray start` (then killing its process group) stops only this one.
    """

    def __init__(self) -> None:
        # Ray's socket paths live under the temp dir and must stay short.
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = clean_env(**RAY_ENV)
        self.log = Path(self.temp_dir) / "ray-start.log"
        ray_bin = Path(sys.executable).parent / "ray"
        argv = [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            "--port",
            str(self.port),
            "--num-cpus",
            "2",
            "--num-gpus",
            "2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--temp-dir",
            self.temp_dir,
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ray start exited:\n{self.log.read_text()[-3000:]}")
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise AssertionError(f"ray start did not finish:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=40)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of ours left behind
        self.proc.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv, close = start_server(tmp_path_factory.mktemp("ray-srv"), "sqlite", lease=LEASE)
    yield srv
    close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    c = RayCluster()
    try:
        c.wait_up()
        yield c
    finally:
        c.stop()


class Driver:
    """`hpo ray-workers` in a subprocess (the command's stand-alone entry point)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, cluster: RayCluster, server: Server, study: str, *args: str
    ) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-m",
            "hpo_service.cli.ray_workers",
            "ray-workers",
            "--address",
            cluster.address,
            "--server",
            server.url,
            "--key",
            _key(server, Role.WORKER),
            "--study",
            study,
            "--poll-min-seconds",
            "0.2",
            "--poll-max-seconds",
            "0.5",
            "--kill-grace",
            "2",
            *args,
        ]
        with (self.tmp / f"driver-{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, cwd=self.tmp, env=cluster.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-6000:] for p in sorted(self.tmp.glob("driver-*.log"))
        )

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"driver still running after {timeout}s\n{self.log()}") from None

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Driver]:
    d = Driver(tmp_path)
    yield d
    d.close()


def _script(tmp: Path, name: str, text: str) -> list[str]:
    path = tmp / name
    path.write_text(text)
    return [sys.executable, str(path), str(tmp)]


def _in_state(server: Server, study: str, state: str) -> list[dict[str, Any]]:
    return [t for t in server.trials(study) if t["state"] == state]


# hpo ray-workers ---------------------------------------------------------------------------
@pytest.mark.slow
def test_two_actors_run_a_study_each_on_its_own_gpu(
    cluster: RayCluster, server: Server, driver: Driver, tmp_path: Path
) -> None:
    study = server.create_study(max_trials=4)
    command = _script(tmp_path, "gpu_trial.py", GPU_TRIAL)
    proc = driver.start(
        cluster, server, study, "--workers", "2", "--num-gpus-per-worker", "1", "--", *command
    )
    assert driver.wait(proc, 180) == 0, driver.log()
    trials = server.trials(study)
    assert len(trials) == 4
    gpus_by_worker: dict[str, set[str]] = {}
    for t in trials:
        assert t["state"] == "completed", (t, driver.log())
        seen = (tmp_path / f"gpu-{t['id']}").read_text()
        assert seen in {"0", "1"}, seen  # one GPU, never both, never none
        assert t["result"]["metrics"]["gpu"] == int(seen)
        assert t["worker_id"].endswith(f"-gpu{seen}"), t["worker_id"]
        gpus_by_worker.setdefault(t["worker_id"], set()).add(seen)
    # two actors, each always on the same single GPU, and the GPUs differ
    assert sorted(gpus_by_worker.values(), key=sorted) == [{"0"}, {"1"}]
    assert server.api("GET", f"/v1/studies/{study}")["state"] == "completed"


@pytest.mark.slow
def test_sigterm_hands_every_active_trial_back_within_10s(
    cluster: RayCluster, server: Server, driver: Driver, tmp_path: Path
) -> None:
    study = server.create_study(max_trials=4)
    command = _script(tmp_path, "hold_trial.py", HOLD_TRIAL)
    proc = driver.start(cluster, server, study, "--workers", "2", "--", *command)
    active = wait_for(
        lambda: len(_in_state(server, study, "active")) == 2 and _in_state(server, study, "active"),
        120,
        "both actors to lease a trial",
    )
    wait_for(lambda: len(list(tmp_path.glob("run-*"))) == 2, 60, "both commands to start")
    children = [int(p.read_text().split()[0]) for p in tmp_path.glob("run-*")]
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: not _in_state(server, study, "active"), 10, "no trial to be active")
    assert time.monotonic() - signalled < 10
    for t in active:
        after = server.api("GET", f"/v1/trials/{t['id']}")
        assert after["state"] == "requested", after
        assert "released" in (after["error"] or ""), after  # handed back, not expired
    assert driver.wait(proc, 60) == 0, driver.log()
    assert not any(running(pid) for pid in children)


@pytest.mark.slow
def test_a_restarted_actor_gets_its_trial_back(
    cluster: RayCluster, server: Server, driver: Driver, tmp_path: Path
) -> None:
    study = server.create_study(max_trials=1)
    command = _script(tmp_path, "hold_trial.py", HOLD_TRIAL)
    # Both GPUs: the restarted actor lands on the same ones, so it has the same worker id.
    proc = driver.start(
        cluster, server, study, "--num-gpus-per-worker", "2", "--max-restarts", "2", "--", *command
    )
    [trial] = wait_for(lambda: _in_state(server, study, "active"), 120, "a lease")
    first = wait_for(lambda: list(tmp_path.glob(f"run-{trial['id']}-0")), 60, "the command")[0]
    _, actor_pid, attempt = first.read_text().split()
    killed = time.monotonic()
    os.kill(int(actor_pid), signal.SIGKILL)  # the actor's process: Ray restarts it
    second = tmp_path / f"run-{trial['id']}-1"
    wait_for(second.exists, 60, "the restarted actor to run the trial again")
    assert time.monotonic() - killed < LEASE / 2  # its lease came back, it did not expire
    assert second.read_text().split()[2] == attempt == "1"
    (tmp_path / f"go-{trial['id']}").write_text("")
    assert driver.wait(proc, 60) == 0, driver.log()
    done = server.api("GET", f"/v1/trials/{trial['id']}")
    assert done["state"] == "completed", done
    assert (done["attempt"], done["worker_id"]) == (1, trial["worker_id"])


def test_actor_worker_ids() -> None:
    assert actor_worker_id("ray", "10.0.0.5", ["3"], 0, exclusive=True) == "ray-10.0.0.5-gpu3"
    assert actor_worker_id("ray", "10.0.0.5", ["0", "1"], 4, exclusive=True) == (
        "ray-10.0.0.5-gpu0_1"
    )
    # devices shared with other actors: the index keeps the ids apart
    assert actor_worker_id("ray", "10.0.0.5", ["0"], 2, exclusive=False) == "ray-10.0.0.5-gpu0-w2"
    assert actor_worker_id("x", "10.0.0.5", [], 1, exclusive=True) == "x-10.0.0.5-w1"


def test_hpo_ray_workers_checks_its_flags_before_touching_ray(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["ray-workers", "--address", "127.0.0.1:1", "--study", "s", "--key", "k"]
    assert hpo_main(base) == 2  # neither a command nor a proxy
    assert "either a command" in capsys.readouterr().err
    assert hpo_main([*base, "--workers", "0", "--", "true"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_hpo_ray_workers_without_ray_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    monkeypatch.delitem(sys.modules, "hpo_service.integrations.ray_workers", raising=False)
    argv = ["ray-workers", "--address", "a:1", "--study", "s", "--key", "k", "--", "true"]
    assert hpo_main(argv) == 2
    assert "pip install 'hpo_service[ray]'" in capsys.readouterr().err


@pytest.mark.slow
def test_hpo_starts_without_importing_ray() -> None:
    code = (
        "import sys; from hpo_service.cli.main import _parser; _parser(); "
        "sys.exit('ray' in sys.modules)"
    )
    env = clean_env()
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)


# Tune --------------------------------------------------------------------------------------
SPACE = {
    "lr": tune.loguniform(1e-4, 1e-1),
    "layers": tune.randint(1, 5),
    "opt": tune.choice(["adam", "sgd"]),
    "wd": tune.quniform(0.0, 0.1, 0.02),
    "model": {"width": tune.uniform(1.0, 2.0), "name": "mlp"},
}


def _loss(config: dict[str, Any]) -> float:
    bonus = 0.1 if config["opt"] == "adam" else 0.0
    return (
        float(config["lr"] * 10 + config["layers"] + config["wd"] + config["model"]["width"])
        - bonus
    )


def objective(config: dict[str, Any]) -> None:
    assert config["model"]["name"] == "mlp"  # constants stay with Tune
    assert isinstance(config["layers"], int)
    for step in range(3):
        tune.report({"loss": _loss(config) + (2 - step), "aux": float(step)})


def test_tune_space_becomes_the_service_space() -> None:
    space = convert_search_space(SPACE)
    assert space.json["parameters"] == [
        {"name": "lr", "type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        {"name": "layers", "type": "int", "low": 1, "high": 4, "scale": "linear"},
        {"name": "opt", "type": "categorical", "choices": ["adam", "sgd"]},
        {
            "name": "wd",
            "type": "ordinal",
            "values": [0.0, 0.02, 0.04, 0.06, 0.08, 0.1],
            "scale": "linear",
        },
        {"name": "model.width", "type": "float", "low": 1.0, "high": 2.0, "scale": "linear"},
    ]
    decoded = space.decode({"lr": 0.01, "layers": 3.0, "opt": "sgd", "wd": 0.04, "model.width": 1})
    assert decoded == {"lr": 0.01, "layers": 3, "opt": "sgd", "wd": 0.04, "model": {"width": 1.0}}
    assert isinstance(decoded["layers"], int)
    assert isinstance(decoded["model"]["width"], float)
    numbers = convert_search_space({"bs": tune.choice([16, 32]), "q": tune.qrandint(0, 20, 5)})
    assert numbers.json["parameters"][1]["values"] == [0, 5, 10, 15, 20]  # upper inclusive
    assert numbers.decode({"bs": "32", "q": 15}) == {"bs": 32, "q": 15}


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ({"x": tune.randn()}, "no bounded service equivalent"),
        ({"x": tune.grid_search([1, 2])}, "grid_search"),
        ({"x": tune.sample_from(lambda _: 1)}, "sample_from"),
        ({"x y": tune.uniform(0, 1)}, "names are"),
        ({"x": tune.quniform(0, 1000, 0.1)}, "at most 1000"),
        ({"only": "constants"}, "no search domain"),
    ],
)
def test_unsearchable_spaces_are_refused(config: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        convert_search_space(config)


def test_result_metrics_keep_only_the_users_numbers() -> None:
    result = {
        "loss": 1.5,
        "acc": 1,
        "training_iteration": 3,
        "time_total_s": 2.0,
        "config/lr": 0.1,
        "done": True,
        "trial_id": "abc",
        "bad": float("nan"),
    }
    assert result_metrics(result) == {"loss": 1.5, "acc": 1.0}


@pytest.fixture
def ray_driver(cluster: RayCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_driver")
def test_tune_runs_its_trials_through_the_service(server: Server, tmp_path: Path) -> None:
    searcher = HPOServiceSearcher(
        server.url,
        _key(server, Role.CLIENT),
        study={"name": "tune-e2e", "algorithm": "sobol", "seed": 0, "max_trials": 8},
    )
    tuner = tune.Tuner(
        objective,
        param_space=SPACE,
        tune_config=tune.TuneConfig(search_alg=searcher, metric="loss", mode="min", num_samples=8),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="e2e", verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 0
    assert len(results) == 8
    study = server.api("GET", f"/v1/studies/{searcher.study_id}")
    assert study["objective"] == {"metric": "loss", "goal": "minimize"}
    assert study["state"] == "completed"
    trials = {t["worker_id"]: t for t in server.trials(searcher.study_id)}
    assert len(trials) == 8
    for result in results:
        t = trials[f"tune-{result.metrics['trial_id']}"]  # one worker id per Tune trial
        assert t["state"] == "completed", t
        assert t["result"]["metrics"]["loss"] == pytest.approx(result.metrics["loss"])
        assert t["result"]["metrics"]["loss"] == pytest.approx(_loss(result.config))
        assert [m["step"] for m in t["measurements"]] == [1, 2, 3]
        assert [m["metrics"]["aux"] for m in t["measurements"]] == [0.0, 1.0, 2.0]
        assert t["params"]["opt"] == result.config["opt"]
        assert t["params"]["model.width"] == pytest.approx(result.config["model"]["width"])


@pytest.mark.slow
def test_searcher_save_and_restore_round_trip(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key(server, Role.CLIENT)
    first = HPOServiceSearcher(server.url, key, study={"algorithm": "random", "seed": 1})
    assert first.set_search_properties("loss", "max", SPACE)
    one, two = first.suggest("t1"), first.suggest("t2")
    assert isinstance(one, dict)
    assert isinstance(two, dict)
    assert one["model"]["width"] >= 1.0
    first.on_trial_result("t1", {"loss": 0.5, "training_iteration": 1})
    checkpoint = tmp_path / "searcher.pkl"
    first.save(str(checkpoint))
    assert key.encode() not in checkpoint.read_bytes()

    restored = HPOServiceSearcher(server.url, key, heartbeat_seconds=0.5)
    restored.restore(str(checkpoint))
    assert (restored.study_id, restored.metric, restored.mode) == (first.study_id, "loss", "max")
    three = restored.suggest("t3")
    assert isinstance(three, dict)
    assert set(three) == set(one)
    restored.on_trial_complete("t1", {"loss": 0.75, "training_iteration": 2, "time_total_s": 1.0})
    restored.on_trial_complete("t2", error=True)

    study = restored.study_id
    assert study is not None
    by_worker = {t["worker_id"]: t for t in server.trials(study)}
    assert by_worker["tune-t1"]["state"] == "completed"
    assert by_worker["tune-t1"]["result"]["metrics"] == {"loss": 0.75}
    assert [m["step"] for m in by_worker["tune-t1"]["measurements"]] == [1]
    assert by_worker["tune-t2"]["state"] == "failed"
    assert "errored" in by_worker["tune-t2"]["error"]
    # the restored searcher heartbeats its own lease (0.5 s apart on a 60 s lease)
    before = server.api("GET", f"/v1/trials/{by_worker['tune-t3']['id']}")["lease_expires_at"]
    wait_for(
        lambda: (
            server.api("GET", f"/v1/trials/{by_worker['tune-t3']['id']}")["lease_expires_at"]
            > before
        ),
        10,
        "a heartbeat to extend the lease",
    )

    # Tune pickles the searcher into tuner.pkl: the key stays out, HPO_API_KEY brings it back
    blob = pickle.dumps(restored)
    assert key.encode() not in blob
    monkeypatch.setenv("HPO_API_KEY", key)
    again = pickle.loads(blob)
    again.on_trial_complete("t3", {"loss": 2.0})
    assert server.api("GET", f"/v1/trials/{by_worker['tune-t3']['id']}")["state"] == "completed"

    # close() hands back what is still leased (an interrupted fit() in a notebook)
    assert isinstance(again.suggest("t4"), dict)
    [t4] = [t for t in server.trials(study) if t["worker_id"] == "tune-t4"]
    assert t4["state"] == "active"
    for searcher in (first, restored, again):
        searcher.close()
    assert server.api("GET", f"/v1/trials/{t4['id']}")["state"] == "requested"
