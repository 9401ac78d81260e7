"""A limit on failed authentications, so API keys cannot be guessed at speed.

Failures are counted per source (the key id named in the token, else the client address)
in a sliding window; past the limit, every attempt from that source gets 429 until the
window moves on. The state is per process and bounded in size: a multi-process server
multiplies the limit by its process count, which still makes guessing 256-bit secrets
hopeless while keeping the check free of database writes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

from hpo_service.errors import RateLimitedError

__all__ = ["FailedAuthLimiter"]

_MAX_SOURCES = 10_000


class FailedAuthLimiter:
    """Counts failed authentications per source in a sliding window."""

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window = window_seconds
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, source: str, now: float) -> deque[float]:
        times = self._failures.get(source)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, source: str) -> None:
        """Raise RateLimitedError when ``source`` is over the limit."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(source, now)
            if len(times) >= self.limit:
                raise RateLimitedError(
                    "too many failed authentication attempts; retry later",
                    retry_after=times[0] + self.window - now,
                )

    def record_failure(self, source: str) -> None:
        """Count one failed attempt by ``source``."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(source, now)
            times.append(now)
            self._failures[source] = times
            self._failures.move_to_end(source)
            while len(self._failures) > _MAX_SOURCES:
                self._failures.popitem(last=False)
