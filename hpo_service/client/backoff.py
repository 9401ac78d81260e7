"""Retrying calls to the service with exponential backoff and full jitter.

A worker must survive the service restarting under it, so every call it makes goes
through ``retry_call``: network errors (connection refused, timeouts, dropped
connections) and 5xx/429 answers are retried with growing, randomised sleeps, because
they say nothing about the request itself. Any other 4xx is raised at once: repeating a
request the service rejected would only be rejected again.

Retrying a finishing call is safe only if the service can recognise the repeat, so the
caller passes one ``Idempotency-Key`` per trial completion and reuses it on every attempt
(see ``hpo_service.worker.loop``); this module never invents keys.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from hpo_service.client.errors import ProblemError

__all__ = ["Backoff", "GiveUpError", "is_retryable", "retry_call"]

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
"""Statuses that describe the service's condition, not the request (plus any other 5xx)."""


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts.

    Attempt ``n`` (from 0) sleeps a uniformly random time in ``[0, min(cap, base * factor**n)]``
    ("full jitter"), so many workers that lost the service at the same moment do not all
    come back at the same moment.

    Attributes:
        base: the first ceiling in seconds.
        factor: growth of the ceiling per attempt.
        cap: the largest ceiling in seconds.
        deadline: give up after this many seconds in total (None: never).
        max_attempts: give up after this many attempts (None: never).
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 10.0
    deadline: float | None = 600.0
    max_attempts: int | None = None

    def ceiling(self, attempt: int) -> float:
        """The largest sleep after failed attempt ``attempt`` (0-based)."""
        # Bound the exponent so huge attempt counts cannot overflow a float.
        return min(self.cap, self.base * self.factor ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A jittered sleep after failed attempt ``attempt``."""
        return (rng or random).uniform(0.0, self.ceiling(attempt))


class GiveUpError(Exception):
    """Retries ran out (deadline, attempt limit, or the caller asked to stop).

    Attributes:
        last: the error of the final attempt.
        attempts: how many attempts were made.
    """

    def __init__(self, last: BaseException, attempts: int, why: str) -> None:
        self.last = last
        self.attempts = attempts
        super().__init__(f"gave up after {attempts} attempts ({why}): {last}")


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is about the network or the service's health, not the request."""
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, ProblemError):
        return exc.status >= 500 or exc.status in RETRYABLE_STATUS
    return False


def retry_call(
    fn: Callable[[], T],
    policy: Backoff,
    *,
    stop: threading.Event | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``fn`` until it succeeds, retrying only retryable errors.

    Args:
        fn: the call; it must be safe to repeat (reads, leases by worker id, or finishing
            calls that carry a fixed Idempotency-Key).
        policy: the backoff schedule and limits.
        stop: when set, stop retrying (the sleep is interrupted at once). A first attempt
            is always made, so a shutdown still gets to send its last words.
        on_retry: told (attempt, error, sleep) before each sleep, for logging.
        rng: randomness for the jitter (tests pass a seeded one).
        clock: monotonic time source.

    Returns:
        Whatever ``fn`` returned.

    Raises:
        GiveUpError: a retryable error persisted past the deadline or attempt limit, or
            ``stop`` was set while waiting.
        Exception: any non-retryable error from ``fn``, unchanged.
    """
    start = clock()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            attempt += 1
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                raise GiveUpError(exc, attempt, "attempt limit") from exc
            sleep = policy.delay(attempt - 1, rng)
            if policy.deadline is not None:
                left = policy.deadline - (clock() - start)
                if left <= 0:
                    raise GiveUpError(exc, attempt, "deadline") from exc
                sleep = min(sleep, left)
            if stop is not None and stop.is_set():
                raise GiveUpError(exc, attempt, "stopped") from exc
            if on_retry is not None:
                on_retry(attempt, exc, sleep)
            if stop is not None:
                if stop.wait(sleep):
                    raise GiveUpError(exc, attempt, "stopped") from exc
            else:
                time.sleep(sleep)
