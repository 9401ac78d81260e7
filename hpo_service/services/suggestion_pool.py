"""The process-wide suggestion pool that bounds how long a suggestion request waits.

One ``SuggestionPool`` (``engine/pool.py``) per API process holds, per study, the
designer run in flight, precomputed points and the points recently handed out. It is
created on first use, so processes that never suggest (the CLI, migrations) pay nothing;
tests and benchmarks replace it to choose their own deadline or to start from an empty
state.
"""

from __future__ import annotations

import threading

from hpo_service.engine.pool import PoolSettings, SuggestionPool

__all__ = ["replace_pool", "shared_pool"]

_lock = threading.Lock()
_pool: SuggestionPool | None = None


def shared_pool() -> SuggestionPool:
    """This process's pool, created with the default ``PoolSettings`` on first use."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = SuggestionPool()
        return _pool


def replace_pool(settings: PoolSettings | None = None) -> SuggestionPool:
    """Start a new pool with ``settings``; the old one finishes its runs and closes.

    Pooled points and the memory of handed-out points are dropped with the old pool;
    that only matters to requests already in flight, which keep their reference.
    """
    global _pool
    with _lock:
        old, _pool = _pool, SuggestionPool(settings)
        new = _pool
    if old is not None:
        old.close()
    return new
