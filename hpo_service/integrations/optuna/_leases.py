"""The leases an Optuna process holds on service trials, kept alive by one thread.

An Optuna trial may run for hours, and nothing in Optuna calls the sampler while it
does, so the sampler cannot heartbeat from its own methods. One daemon thread per
sampler heartbeats every lease it holds at a third of the lease the service granted.
If the process dies (``kill -9``, a lost node), the heartbeats stop, the lease expires,
and the service hands the same point to the next Optuna trial that asks: no suggestion
is lost with the process.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from hpo_service.client.client import HPOClient
from hpo_service.client.errors import ProblemError
from hpo_service.client.models import Trial

__all__ = ["Lease", "LeaseKeeper"]

_log = logging.getLogger(__name__)
MIN_INTERVAL = 0.25


@dataclass
class Lease:
    """One service trial leased for one Optuna trial.

    Attributes:
        trial_id: the service trial.
        study_id: its service study.
        worker_id: the lease holder (one per Optuna trial number).
        attempt: the service's attempt number, part of the finishing call's key.
        values: the Optuna values handed to the trial (decoded service params).
        interval: seconds between heartbeats.
        lost: the service said the lease is gone (expired and requeued, or finished).
    """

    trial_id: str
    study_id: str
    worker_id: str
    attempt: int
    values: dict[str, Any]
    interval: float
    lost: bool = False
    next_beat: float = field(default=0.0, repr=False)


def heartbeat_interval(trial: Trial, cap: float) -> float:
    """A third of the lease the service granted, at most ``cap`` seconds."""
    interval = cap
    expires = trial.lease_expires_at
    if expires is not None:
        if expires.tzinfo is None:  # API.md times are UTC, with or without an offset
            expires = expires.replace(tzinfo=UTC)
        interval = min(interval, (expires - datetime.now(UTC)).total_seconds() / 3)
    return max(MIN_INTERVAL, interval)


class LeaseKeeper:
    """Holds leases by key and heartbeats them from a thread started on first use."""

    def __init__(self, client: HPOClient) -> None:
        self._client = client
        self._leases: dict[Any, Lease] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def hold(self, key: Any, lease: Lease) -> None:
        """Start heartbeating ``lease`` (replacing one held under the same key)."""
        lease.next_beat = time.monotonic() + lease.interval
        with self._cond:
            self._leases[key] = lease
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="hpo-optuna-heartbeat", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def release(self, key: Any) -> Lease | None:
        """Stop heartbeating the lease held under ``key``; return it (None if none)."""
        with self._cond:
            return self._leases.pop(key, None)

    def close(self) -> None:
        """Stop the thread; leases still held expire on the service."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _due(self) -> list[Lease] | None:
        """Wait until a lease is due; None once closed."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                live = [lease for lease in self._leases.values() if not lease.lost]
                due = [lease for lease in live if lease.next_beat <= now]
                if due:
                    return due
                wake = min((lease.next_beat for lease in live), default=None)
                self._cond.wait(None if wake is None else wake - now)
            return None

    def _run(self) -> None:
        while (due := self._due()) is not None:
            for lease in due:
                try:
                    self._beat(lease)
                except Exception:  # the thread must outlive one bad answer
                    _log.exception("heartbeat of service trial %s", lease.trial_id)

    def _beat(self, lease: Lease) -> None:
        lease.next_beat = time.monotonic() + lease.interval
        try:
            self._client.trials.heartbeat(lease.trial_id, lease.worker_id)
        except ProblemError as exc:
            if exc.status in (404, 409):
                lease.lost = True
                _log.warning("lease of service trial %s lost: %s", lease.trial_id, exc.detail)
            else:
                _log.warning("heartbeat of service trial %s refused: %s", lease.trial_id, exc)
        except httpx.TransportError as exc:
            # Try again soon: a few missed beats still fit in the lease.
            lease.next_beat = time.monotonic() + max(MIN_INTERVAL, lease.interval / 3)
            _log.warning("heartbeat of service trial %s failed: %s", lease.trial_id, exc)
