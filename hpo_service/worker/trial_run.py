"""One leased trial on the worker side: its live state and how its end is judged.

``TrialRun`` is shared by a slot, its heartbeat and its measurement reporter, so that any
of them can interrupt the work (a lost lease, ``should_stop``, shutdown, timeout) and the
slot can decide afterwards what to tell the service (``Outcome``, ``judge_result``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hpo_service.client.models import Trial

__all__ = [
    "MeasurementQueue",
    "Outcome",
    "TrialRun",
    "finite_metrics",
    "judge_result",
]


class MeasurementQueue(Protocol):
    """The ordered, bounded queue that posts one trial's measurements (``MeasurementReporter``).

    A protocol, so that a run can hold its reporter without this module importing it.
    """

    def put(self, item: tuple[int, dict[str, float], float | None] | None) -> None:
        """Queue a measurement (None: no more will come)."""

    def close(self, timeout: float) -> None:
        """Send what is queued for up to ``timeout`` seconds, then drop the rest."""


@dataclass
class Outcome:
    """What to tell the service about a trial once its work is over.

    Attributes:
        action: ``complete`` | ``fail`` | ``infeasible`` | ``release`` | ``none``.
        metrics: the result (complete).
        cost: the cost (complete).
        reason: the error or reason text (fail, infeasible, release).
        retry: requeue the trial (fail).
    """

    action: str
    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    retry: bool = False


class TrialRun:
    """The live state of one leased trial, shared by the slot, heartbeat and reporters."""

    def __init__(self, trial: Trial, slot: int, worker_id: str) -> None:
        self.trial = trial
        self.id = trial.id
        self.slot = slot
        self.worker_id = worker_id
        self.stop = threading.Event()
        self.why: str | None = None  # should_stop | lease_lost | shutdown | timeout
        self.started = time.monotonic()
        self.step: int | None = None
        self.total_steps: int | None = None
        self.reporter: MeasurementQueue | None = None
        self._lock = threading.Lock()

    def interrupt(self, why: str) -> None:
        """Ask the work to stop; the first reason wins (a lost lease trumps the rest)."""
        with self._lock:
            if self.why is None or why == "lease_lost":
                self.why = why
        self.stop.set()

    def eta(self) -> float | None:
        """Seconds left, from the pace so far, when the run says how long it is."""
        if not self.step or not self.total_steps or self.total_steps <= self.step:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / self.step * (self.total_steps - self.step)


def finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Drop NaN/inf values: the service accepts only finite numbers."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def judge_result(
    objectives: Sequence[str], metrics: dict[str, float], cost: dict[str, Any], *, partial: bool
) -> Outcome:
    """Turn a run's metrics into complete / infeasible / fail.

    A non-finite objective means the point diverged (infeasible: the optimiser should
    learn to avoid it); a missing objective is a broken run (failed, not retried, since
    the same command would miss it again). Other non-finite metrics are dropped, because
    the service accepts only finite numbers and they are not what is being optimised.

    Args:
        objectives: the study's objective metrics (``Study.objective_names()``): a result
            must report each of them.
        metrics: what the run reported last.
        cost: what the run cost, passed on with a completion.
        partial: the run was stopped early (only changes the wording of a failure).
    """
    missing = [m for m in objectives if m not in metrics]
    if missing:
        when = "stopped early before it reported" if partial else "finished without reporting"
        return Outcome("fail", reason=f"the run {when} {', '.join(missing)}; got {metrics}")
    bad = [m for m in objectives if not math.isfinite(metrics[m])]
    if bad:
        return Outcome("infeasible", reason=", ".join(f"{m}={metrics[m]}" for m in bad))
    return Outcome("complete", metrics=finite_metrics(metrics), cost=cost)
