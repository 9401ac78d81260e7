"""The shared launcher of local test servers: fails fast, times out, stops whole groups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.local_server import (
    ServerExitedError,
    ServerStartTimeoutError,
    free_port,
    launch,
    running,
    stop_process,
    wait_until_up,
)


def _python(code: str, *, new_session: bool = False) -> subprocess.Popen[bytes]:
    return launch([sys.executable, "-c", code], env=os.environ, new_session=new_session)


def test_a_server_that_exits_is_reported_at_once_not_after_the_timeout() -> None:
    proc = _python("raise SystemExit(3)")
    start = time.monotonic()
    with pytest.raises(ServerExitedError, match="exited with 3"):
        wait_until_up(proc, f"http://127.0.0.1:{free_port()}/healthz", timeout=60)
    assert time.monotonic() - start < 30


def test_a_server_that_never_answers_times_out() -> None:
    proc = _python("import time; time.sleep(60)")
    try:
        with pytest.raises(ServerStartTimeoutError):
            wait_until_up(proc, f"http://127.0.0.1:{free_port()}/healthz", timeout=0.5)
    finally:
        proc.kill()
        proc.wait()


def test_stop_reaches_the_whole_group_and_kills_what_ignores_the_signal(tmp_path) -> None:
    pid_file = tmp_path / "child"
    code = (
        "import signal, subprocess, sys, time, pathlib\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    proc = _python(code, new_session=True)
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    stop_process(proc, sig=signal.SIGTERM, grace=0.5, group=True)
    assert proc.returncode == -signal.SIGKILL  # it ignored SIGTERM, so it was killed
    deadline = time.monotonic() + 10
    while running(child):
        assert time.monotonic() < deadline, "the group's other process survived"
        time.sleep(0.05)
