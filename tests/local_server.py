"""A local `hpo serve` in a subprocess, for tests and benchmarks: port, launch, wait, stop.

Several test suites and benchmarks start real servers (the CLI test, the worker and
reliability end-to-end tests, the load and HTTP batch benchmarks). They used to carry
their own copies of this code, which drifted (different health checks, one forgetting to
notice a server that had already exited). Keeping one copy means a fix to how a server is
started or stopped reaches all of them.

Benchmarks run as ``.venv/bin/python benchmarks/x.py`` from the repository root and put
the root on ``sys.path``, so they import this module as ``tests.local_server`` too; it
depends on nothing of the test suite (no pytest, no fixtures) for that reason.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "LOCALHOST",
    "ServerExitedError",
    "ServerStartError",
    "ServerStartTimeoutError",
    "free_port",
    "launch",
    "running",
    "serve_argv",
    "stop_process",
    "wait_until_up",
]

LOCALHOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server did not come up: one type for callers that only need to know that."""


class ServerExitedError(ServerStartError):
    """The server process ended before it answered its health check."""


class ServerStartTimeoutError(ServerStartError, TimeoutError):
    """The server did not answer its health check in time."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nothing listens on right now, chosen by the OS.

    The socket is closed before the server binds, so another process could take the port
    in between; on a test machine that race is rare enough not to matter.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_argv(
    port: int, *, database_url: str | None = None, workers: int | None = None
) -> list[str]:
    """``python -m hpo_service serve`` with this interpreter, so it runs this checkout."""
    argv = [sys.executable, "-m", "hpo_service", "serve", "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if database_url is not None:
        argv += ["--database-url", database_url]
    return argv


def launch(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    log: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output in ``log`` (stdout and stderr) or discarded.

    ``new_session`` puts it in a process group of its own, so that
    ``stop_process(..., group=True)`` (or ``os.killpg``) also reaches the worker
    processes a multi-process server forks, which a signal to the parent alone would
    leave behind.
    """
    if log is None:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=new_session,
        )
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )


def _status_ok(response: httpx.Response) -> bool:
    return response.status_code == 200


def wait_until_up(
    proc: subprocess.Popen[Any],
    url: str,
    *,
    timeout: float,
    healthy: Callable[[httpx.Response], bool] = _status_ok,
    request_timeout: float = 1.0,
    interval: float = 0.2,
) -> None:
    """Poll ``url`` until ``healthy`` says yes; give up early if ``proc`` has exited.

    Raises:
        ServerExitedError: the process ended first (waiting on would only burn the
            timeout on a server that cannot come up).
        ServerStartTimeoutError: ``timeout`` seconds passed without a healthy answer.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerExitedError(f"server exited with {proc.returncode}")
        try:
            if healthy(httpx.get(url, timeout=request_timeout)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise ServerStartTimeoutError(f"{url} did not answer within {timeout:.0f} s")


def stop_process(
    proc: subprocess.Popen[Any],
    *,
    sig: int = signal.SIGINT,
    grace: float = 15.0,
    group: bool = False,
) -> None:
    """Send ``sig`` (to the process group with ``group``), then SIGKILL after ``grace`` s.

    SIGINT is how a terminal stops ``hpo serve`` (uvicorn's graceful shutdown); a process
    that has already exited is left alone.
    """
    if proc.poll() is not None:
        return

    def send(signum: int) -> None:
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)

    send(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=10)


def running(pid: int) -> bool:
    """Whether ``pid`` runs: alive and not a zombie (Linux ``/proc``).

    A killed orphan stays a zombie until whoever reaps orphans here gets to it (in a
    container, possibly never), so "can be signalled" is not "still running".
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
