"""What the worker's helper threads need from the worker, as small protocols.

The heartbeat and the measurement reporter call back into the worker (its retrying
``call``, its event ``sink``, ``send_measurement``). Naming those needs here, instead of
importing ``Worker``, keeps the worker package free of import cycles: ``loop`` depends on
everything else, and nothing depends on ``loop``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from hpo_service.client.backoff import Backoff
    from hpo_service.client.client import HPOClient
    from hpo_service.worker.trial_run import TrialRun

__all__ = ["Sink", "WorkerLink"]

T = TypeVar("T")


class Sink(Protocol):
    """Where the worker's events go (structured log lines, or a live rich display)."""

    def emit(self, event: str, slot: int | None = None, **fields: Any) -> None:
        """Record one event; ``slot`` is the slot it concerns, if any."""


class WorkerLink(Protocol):
    """The worker as its heartbeat and reporter threads see it."""

    @property
    def sink(self) -> Sink:
        """Where events go."""

    def call(
        self,
        op: str,
        fn: Callable[[], T],
        *,
        slot: int | None = None,
        policy: Backoff | None = None,
        stop: threading.Event | None = None,
        quiet: bool = False,
    ) -> T:
        """Run one service call with the worker's retry policy."""

    def send_measurement(
        self,
        client: HPOClient,
        run: TrialRun,
        step: int,
        clean: dict[str, float],
        elapsed: float | None,
        stop: threading.Event,
        *,
        offline: bool,
    ) -> bool:
        """Post one measurement; return whether it got through."""
