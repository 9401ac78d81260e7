"""A built-in proxy trained in a child process: how ``--proxy`` runs on pinned GPUs.

Unpinned, a worker trains its proxies in its own threads. That cannot pin GPUs:
``CUDA_VISIBLE_DEVICES`` is read once per process, when CUDA initialises, so threads of
one process all see the same devices, and a proxy spread over a group of GPUs by device
index would still share one Python interpreter (and its GIL) with every other slot.
So a pinned slot starts ``python -m hpo_service.worker.proxy_child SPEC`` per trial, with
the slot's ``CUDA_VISIBLE_DEVICES``, and drives it exactly like a user's command
(``command.run_command``): the child speaks the ``HPO_METRIC`` protocol, reads the trial's
values from ``HPO_PARAMS``, and inherits command mode's guarantees (stopped with SIGTERM
then SIGKILL, killed with the worker, timed out).

SIGTERM asks the proxy to stop at its next measurement; it then still validates and
prints its (partial) result, which is what ``should_stop`` wants. A diverged run exits
with ``DIVERGED_EXIT`` so the worker can mark the trial infeasible, as it does in-process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

__all__ = ["DIVERGED_EXIT", "child_argv", "main"]

DIVERGED_EXIT = 3
"""Exit status of a run that diverged (an infeasible point, not a broken run)."""


def child_argv(
    name: str,
    scale: dict[str, Any] | None,
    *,
    seed: int,
    data_seed: int,
    max_steps: int | None,
) -> list[str]:
    """The command line that trains proxy ``name`` once with this interpreter.

    Everything but the trial's values travels on the command line; the values come from
    ``HPO_PARAMS`` like for any command.
    """
    spec = {
        "name": name,
        "scale": scale,
        "seed": seed,
        "data_seed": data_seed,
        "max_steps": max_steps,
    }
    return [sys.executable, "-m", "hpo_service.worker.proxy_child", json.dumps(spec)]


def _metric(payload: dict[str, Any]) -> None:
    sys.stdout.write("HPO_METRIC " + json.dumps(payload) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Train once and print the result; the exit status says how it ended."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m hpo_service.worker.proxy_child SPEC_JSON\n")
        return 2
    spec = json.loads(args[0])
    params = json.loads(os.environ["HPO_PARAMS"])
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    # Imported after the signal handler, so a stop during torch's import is not lost.
    from hpo_service.proxies.runner import run_proxy

    start = time.monotonic()

    def on_measurement(step: int, metrics: dict[str, float]) -> bool:
        _metric({"step": step, "elapsed_s": round(time.monotonic() - start, 3), **metrics})
        return stop.is_set()

    result = run_proxy(
        spec["name"],
        params,
        spec.get("scale"),
        seed=int(spec["seed"]),
        data_seed=int(spec["data_seed"]),
        max_steps=spec.get("max_steps"),
        on_measurement=on_measurement,
    )
    metrics = {k: float(v) for k, v in result.metrics.items()}
    _metric({"metrics": metrics, "cost": dict(result.cost)})
    return DIVERGED_EXIT if result.diverged else 0


if __name__ == "__main__":
    raise SystemExit(main())
