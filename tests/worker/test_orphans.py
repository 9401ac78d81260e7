"""A worker killed with SIGKILL takes its training command, and the command's group, along.

The command runs in its own session, so before ``child_lifetime`` a ``kill -9`` of the
worker left it (and whatever it had started) training on for a trial the worker could no
longer report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo_service.worker.child_lifetime import GroupGuard, die_with_parent
from tests.local_server import running
from tests.worker.conftest import ROOT, wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

# The training command: starts a helper process of its own (a data loader, say), writes
# both pids, then trains "forever".
COMMAND = """
import pathlib, subprocess, sys, time
here = pathlib.Path(sys.argv[1])
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
(here / "helper").write_text(str(helper.pid))
(here / "command").write_text(str(__import__("os").getpid()))
time.sleep(120)
"""

# A stand-in for the worker: runs the command the way the worker does, from a slot thread.
WORKER = """
import os, sys, threading
from hpo_service.worker.command import run_command
slot = threading.Thread(target=run_command, args=(sys.argv[1:], dict(os.environ)),
                        kwargs={"on_line": lambda line: None, "stop": threading.Event()})
slot.start()
slot.join()
"""

# A parent that asks only the kernel (no guard) to take its child down with it.
PARENT = """
import pathlib, subprocess, sys
from hpo_service.worker.child_lifetime import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn=die_with_parent(), start_new_session=True)
pathlib.Path(sys.argv[1]).write_text(str(child.pid))
child.wait()
"""


def _pid(path: Path) -> int:
    text = wait_for(lambda: path.exists() and path.read_text(), 30, f"{path.name} to start")
    return int(text)


def _kill9_and_expect_gone(parent: list[str], pid_files: list[Path]) -> None:
    """Start ``parent``, kill -9 it once every pid file is written, expect those pids gone."""
    proc = subprocess.Popen(
        parent, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True
    )
    pids: list[int] = []
    try:
        pids = [_pid(path) for path in pid_files]
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not any(running(p) for p in pids), 5, "the orphans to die")
    finally:
        proc.kill()
        proc.wait()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_sigkilled_worker_takes_the_command_and_its_group_down(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(COMMAND)
    _kill9_and_expect_gone(
        [sys.executable, "-c", WORKER, sys.executable, str(tmp_path / "train.py"), str(tmp_path)],
        [tmp_path / "command", tmp_path / "helper"],
    )


def test_the_kernel_alone_kills_the_direct_child(tmp_path: Path) -> None:
    # covers the moment before the guard starts, and a guard that could not start
    assert die_with_parent() is not None  # Linux
    _kill9_and_expect_gone(
        [sys.executable, "-c", PARENT, str(tmp_path / "child")], [tmp_path / "child"]
    )


def test_a_released_guard_kills_nothing_and_is_reaped() -> None:
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        guard = GroupGuard(sleeper.pid)
        assert guard.active
        guard.release()
        guard.release()  # a second release is harmless
        assert not guard.active
        time.sleep(0.3)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
