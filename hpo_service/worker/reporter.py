"""The thread that posts one trial's intermediate measurements, in order.

Measurements come from the training loop or a child's stdout; posting them inline would
stall training whenever the service is slow or down, so they go through a bounded queue.
"""

from __future__ import annotations

import threading
from collections import deque

from hpo_service.client.client import HPOClient
from hpo_service.worker.ports import WorkerLink
from hpo_service.worker.trial_run import TrialRun

__all__ = ["MeasurementReporter"]


class MeasurementReporter(threading.Thread):
    """Posts one trial's measurements in order, off the training/reading thread.

    While the service is unreachable the backlog grows up to ``MAX_BACKLOG`` (oldest
    dropped first) instead of stalling the child on a full stdout pipe.
    """

    MAX_BACKLOG = 1000

    def __init__(self, worker: WorkerLink, client: HPOClient, run: TrialRun) -> None:
        super().__init__(name=f"reporter-{run.id}", daemon=True)
        self.worker = worker
        self.client = client
        self.run_ = run
        self.abandon = threading.Event()
        self._items: deque[tuple[int, dict[str, float], float | None] | None] = deque()
        self._ready = threading.Condition()

    def put(self, item: tuple[int, dict[str, float], float | None] | None) -> None:
        """Queue a measurement (None: no more will come)."""
        with self._ready:
            if item is not None and len(self._items) >= self.MAX_BACKLOG:
                self._items.popleft()
            self._items.append(item)
            self._ready.notify()

    def run(self) -> None:
        """Drain the queue in order until the closing ``None`` or ``abandon``."""
        offline = False
        while True:
            with self._ready:
                while not self._items:
                    self._ready.wait()
                item = self._items.popleft()
            if item is None or self.abandon.is_set():
                return
            step, metrics, elapsed = item
            offline = not self.worker.send_measurement(
                self.client, self.run_, step, metrics, elapsed, self.abandon, offline=offline
            )

    def close(self, timeout: float) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then drop the rest."""
        self.put(None)
        self.join(timeout)
        if self.is_alive():
            self.abandon.set()
            self.join(5.0)
