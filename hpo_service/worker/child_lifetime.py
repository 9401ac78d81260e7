"""Tie a training command's life to the worker's: if the worker dies, the command dies too.

The command runs in a session of its own (see ``command.py``), so the worker, not the
terminal, decides when it stops. The price: when the worker itself is killed with
SIGKILL (``kill -9``, the OOM killer, a node agent), nothing signals that session, and
the command trains on, holding a GPU, for a trial whose lease will expire and be handed
to another worker.

Two mechanisms close that gap, because neither covers every case alone:

* ``GroupGuard``: a tiny ``/bin/sh`` per trial, in a session of its own, that blocks
  reading a pipe only the worker can write to. The kernel closes the worker's end when
  the worker dies, however it dies; the guard then reads end-of-file and SIGKILLs the
  command's whole process group (a shell wrapper, its children, data-loader processes).
  A trial that ends normally writes a line first, and the guard exits without killing.
  Any POSIX system has ``/bin/sh``.
* ``die_with_parent()``: on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child
  between fork and exec asks the kernel to kill the command itself when its parent
  thread ends. It needs no other process, so it also covers the moment between starting
  the command and starting its guard, and a guard that could not be started; it does not
  reach grandchildren, which is why the guard exists.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

__all__ = ["GroupGuard", "die_with_parent"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# The guard's script: a line means "the trial ended, stand down"; end-of-file means the
# worker is gone. ``--`` makes dash and bash read ``-PGID`` as a process group.
_GUARD_SCRIPT = 'read _ || kill -s KILL -- -"$1"'
_RELEASED = b"done\n"


def _load_prctl() -> Callable[..., int] | None:
    """Libc's ``prctl``, resolved once here: the hook after fork must not load anything."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies.

    Returns None where the kernel offers no such request (not Linux): the command then
    starts as before and only its ``GroupGuard`` stands for it.

    The request is tied to the *thread* that starts the child, so call ``Popen`` from a
    thread that outlives the child (``run_command`` waits for it). The hook runs between
    fork and exec, with other threads' locks possibly held, so it only calls the
    pre-resolved ``prctl`` and ``os`` functions that take no lock.
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        # If the parent died before the request was made, no signal will ever come.
        if os.getppid() != parent:
            os.kill(os.getpid(), kill)

    return hook


class GroupGuard:
    """Kills process group ``pgid`` with SIGKILL if this process dies before ``release``.

    Release only once the group has been stopped (``run_command`` kills it, then
    releases): a guard left standing costs nothing but a sleeping shell, while one
    released early would leave the group unguarded. A worker that dies between killing
    the group and releasing makes the guard signal a group that is already gone.
    """

    def __init__(self, pgid: int) -> None:
        """Start the guard; if ``/bin/sh`` cannot be started, guard nothing (``active``)."""
        read_end, self._write_end = os.pipe()  # both non-inheritable: no child keeps them
        self._released = False
        self._proc: subprocess.Popen[bytes] | None
        try:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", _GUARD_SCRIPT, "hpo-group-guard", str(pgid)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C for the worker must not end its guard
            )
        except OSError:
            self._proc = None
        finally:
            os.close(read_end)

    @property
    def active(self) -> bool:
        """Whether a guard process is watching (False once released, or if it never started)."""
        return not self._released and self._proc is not None and self._proc.poll() is None

    def release(self) -> None:
        """Stand the guard down without killing anything, and reap it (once)."""
        if self._released:
            return
        self._released = True
        with contextlib.suppress(OSError):  # BrokenPipe: the guard is already gone
            os.write(self._write_end, _RELEASED)
        os.close(self._write_end)
        if self._proc is not None:
            self._proc.wait()
