"""The thread that keeps one trial's lease alive while its work runs.

It is separate from the slot thread because training must never wait on the network,
and the lease must not lapse while a step takes long. Its answers relay the service's
``should_stop`` and a lost lease (404/409) to the running trial.
"""

from __future__ import annotations

import threading

from hpo_service.client.backoff import Backoff, GiveUpError
from hpo_service.client.client import HPOClient
from hpo_service.client.errors import ProblemError
from hpo_service.worker.ports import WorkerLink
from hpo_service.worker.trial_run import TrialRun

__all__ = ["HeartbeatThread"]


class HeartbeatThread(threading.Thread):
    """Keeps one trial's lease alive and relays ``should_stop`` / a lost lease."""

    def __init__(
        self, worker: WorkerLink, client: HPOClient, run: TrialRun, interval: float
    ) -> None:
        super().__init__(name=f"heartbeat-{run.id}", daemon=True)
        self.worker = worker
        self.client = client
        self.run_ = run
        self.interval = interval
        self.done = threading.Event()

    def run(self) -> None:
        """Beat every ``interval`` until ``done``; retry briefly, never outlive the lease."""
        run = self.run_
        failing = False
        while not self.done.wait(self.interval):
            try:
                answer = self.worker.call(
                    "heartbeat",
                    lambda: self.client.trials.heartbeat(run.id, run.worker_id),
                    slot=run.slot,
                    stop=self.done,
                    policy=Backoff(base=0.1, cap=1.0, deadline=max(0.5, self.interval)),
                    quiet=True,
                )
            except GiveUpError as exc:
                # Try again next interval: the lease may still be alive. Say so once.
                if not failing:
                    self.worker.sink.emit(
                        "warn", run.slot, trial=run.id, error=f"heartbeat failing: {exc.last}"[:200]
                    )
                failing = True
                continue
            except ProblemError as exc:
                if exc.status in (404, 409):
                    self.worker.sink.emit(
                        "trial.lease_lost", run.slot, trial=run.id, error=exc.detail[:200]
                    )
                    run.interrupt("lease_lost")
                    return
                continue
            if failing:
                self.worker.sink.emit("trial.heartbeat_ok", run.slot, trial=run.id)
                failing = False
            if answer.should_stop and run.why is None:
                self.worker.sink.emit("trial.should_stop", run.slot, trial=run.id)
                run.interrupt("should_stop")
