"""Real processes for the worker's end-to-end tests: `hpo serve` and `hpo worker`.

A server starts slowly (it imports the whole engine), so servers are shared per module
and per setting; each test creates its own study on them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.domain import Role
from hpo_service.services import api_keys
from tests.local_server import (
    ServerStartError,
    free_port,
    launch,
    serve_argv,
    stop_process,
    wait_until_up,
)
from tests.postgres import fresh_postgres_database

ROOT = Path(__file__).resolve().parents[2]

TRAIN = r"""
import json, os, pathlib, sys, time

mode = sys.argv[1]
lr = float(sys.argv[2])
layers = int(sys.argv[3])
params = json.loads(os.environ["HPO_PARAMS"])
assert params["lr"] == lr and params["layers"] == layers, (params, sys.argv)
here = pathlib.Path(sys.argv[4])
tid = os.environ["HPO_TRIAL_ID"]
attempt = int(os.environ["HPO_ATTEMPT"])
(here / f"pid-{tid}-{attempt}").write_text(str(os.getpid()))

def metric(**kw):
    print("HPO_METRIC " + json.dumps(kw), flush=True)

def train():
    for step in range(1, 4):
        metric(step=step, total_steps=3, train_loss=1.0 / step + lr)
        time.sleep(0.02)
    return (lr * 100 - 1) ** 2 + 0.1 * layers

if mode == "slow-first" and attempt == 1:
    metric(step=1, train_loss=1.0)
    time.sleep(120)
if mode == "flaky":
    marker = here / f"failed-{tid}"
    if not marker.exists():
        marker.write_text("x")
        print("Traceback: CUDA out of memory (simulated)", file=sys.stderr, flush=True)
        sys.exit(3)
if mode == "wait-go":
    metric(step=1, train_loss=1.0)
    deadline = time.time() + 120
    while not (here / "go").exists() and time.time() < deadline:
        time.sleep(0.05)
    value = train()
    pathlib.Path(os.environ["HPO_RESULT_FILE"]).write_text(
        json.dumps({"metrics": {"val_loss": value}, "cost": {"flops": 1.0}}))
    sys.exit(0)
metric(val_loss=train())
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Server:
    """One `hpo serve` subprocess that can be killed and restarted on the same port and DB."""

    def __init__(self, workdir: Path, database_url: str, lease: float) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = f"hpo_key_{secrets.token_hex(12)}_{secrets.token_hex(32)}"
        self.env = clean_env(
            HPO_BOOTSTRAP_ADMIN_KEY=self.admin_key,
            HPO_LEASE_SECONDS=str(lease),
            HPO_RECLAIM_INTERVAL_SECONDS="0.5",
            HPO_LOG_LEVEL="warning",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = launch(
            serve_argv(self.port, database_url=self.database_url),
            env=self.env,
            cwd=self.workdir,
            log=self.workdir / f"server-{self.starts}.log",
        )
        try:
            wait_until_up(self.proc, f"{self.url}/healthz", timeout=120, request_timeout=2)
        except ServerStartError as exc:
            raise AssertionError(f"server did not start ({exc}):\n{self.log()}") from None

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.workdir.glob("server-*.log"))
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(
            method,
            self.url + path,
            timeout=30,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            **kw,
        )
        assert r.status_code < 400, r.text
        return r.json() if r.content else None

    def worker_key(self) -> str:
        """A worker-role key of the admin's tenant, stored straight in the database."""
        db = Database(self.database_url)
        try:
            return api_keys.create_key(
                db, role=Role.WORKER, tenant="default", name="w", now=utcnow()
            ).key
        finally:
            db.dispose()

    def create_study(self, max_trials: int, **extra: Any) -> str:
        body = {
            "name": "worker-e2e",
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "space": {
                "parameters": [
                    {"name": "lr", "type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
                    {"name": "layers", "type": "int", "low": 1, "high": 4},
                ]
            },
            "algorithm": "sobol",
            "seed": 3,
            "max_trials": max_trials,
            **extra,
        }
        return str(self.api("POST", "/v1/studies", json=body)["id"])

    def trials(self, study_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/v1/studies/{study_id}/trials")["items"])


def start_server(tmp: Path, backend: str, lease: float) -> tuple[Server, Callable[[], None]]:
    databases = ExitStack()  # closing it drops the PostgreSQL database, if one was made
    if backend == "postgres":
        url = databases.enter_context(fresh_postgres_database("hpo_worker"))
    else:
        url = f"sqlite:///{tmp / 'hpo.db'}"
    drop = databases.close
    server = Server(tmp, url, lease)
    try:
        server.start()
    except BaseException:
        server.kill()
        drop()
        raise
    return server, lambda: (server.stop(), drop())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def short_lease_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server whose leases expire after 2 s (reclaimed every 0.5 s), per backend."""
    server, close = start_server(
        tmp_path_factory.mktemp(f"srv-{request.param}"), request.param, lease=2.0
    )
    yield server
    close()


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A SQLite server with a 300 s lease: no expiry during an outage, however slow the restart."""
    server, close = start_server(tmp_path_factory.mktemp("srv-long"), "sqlite", lease=300.0)
    yield server
    close()


class Workers:
    """Starts `hpo worker` processes (the stand-alone entry point) and cleans them up."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.train = tmp / "train.py"
        self.train.write_text(TRAIN)

    def launch(
        self,
        server: Server,
        key: str,
        study: str,
        *args: str,
        worker_id: str | None = None,
        env: dict[str, str] | None = None,
        entry: str = "hpo_service.cli.worker",
    ) -> subprocess.Popen[bytes]:
        """An `hpo worker` with fast heartbeats and polls, plus ``args``; logs to a file.

        ``entry`` is the module run with ``-m``: the worker's stand-alone entry point by
        default, ``hpo_service`` for the `hpo` command that also hosts the worker.
        """
        log_path = self.tmp / f"worker-{len(self.procs)}.log"
        argv = [
            sys.executable,
            "-m",
            entry,
            "worker",
            "--server",
            server.url,
            "--key",
            key,
            "--study",
            study,
            "--heartbeat-seconds",
            "0.5",
            "--poll-min-seconds",
            "0.2",
            "--poll-max-seconds",
            "0.5",
            "--progress",
            "log",
        ]
        if worker_id:
            argv += ["--worker-id", worker_id]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*argv, *args],
                cwd=self.tmp,
                env=env or clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, log_path))
        return proc

    def start(
        self,
        server: Server,
        key: str,
        study: str,
        mode: str,
        *extra: str,
        worker_id: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """A command-mode worker running the TRAIN script in ``mode`` for every trial."""
        command = [sys.executable, str(self.train), mode, "{lr}", "{layers}", str(self.tmp)]
        return self.launch(
            server, key, study, "--kill-grace", "2", *extra, "--", *command, worker_id=worker_id
        )

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return next(p.read_text(errors="replace") for q, p in self.procs if q is proc)

    def logs(self) -> str:
        return "\n".join(
            f"--- worker {i}\n{p.read_text(errors='replace')[-4000:]}"
            for i, (_, p) in enumerate(self.procs)
        )

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running after {timeout}s\n{self.logs()}") from None

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pid_file in self.tmp.glob("pid-*"):  # children orphaned by kill -9
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
