"""Bounded-latency suggestions: a deadline on the designer, a per-study pool, a fallback.

A request must not wait for a slow model. ``SuggestionPool.suggest`` runs the designer in
a worker thread and waits at most ``deadline_s``:

1. points from a designer run that finishes while the request waits are handed out
   (the normal case: a "fresh" suggestion from the model updated with the latest
   results; if a background run for the study is already in flight the request waits
   for that one instead of queueing a second);
2. once the deadline has passed, points precomputed earlier are handed out — each was
   computed by the designer with the pending set of its moment, and a computation that
   misses its deadline is not wasted: its points land in the pool when it finishes;
3. otherwise a scrambled-Sobol point, tagged ``source="fallback_random"`` with the reason
   in ``metadata["reason"]``.

So a fast designer is never bypassed (its answers are as reproducible as calling it
directly), and a slow one costs a request at most the deadline. When the designer is
slow (its last run took more than half the deadline) every run asks it for at least
``refill_batch`` points — one model fit, one joint batch — and the pool is refilled in
the background after each request, so the pool keeps up with the request rate.

Two concurrent requests for one study never receive the same new point: pooled points
are taken under the study's lock, every point handed out is remembered for ``ttl_s`` and
passed to later designer runs as an extra pending point, and designer output that
repeats a handed-out point is dropped. This holds within one process; across processes
the service serialises suggestion generation per study.

The pool keeps no history of its own: the caller passes a ``compute`` callable that
closes over the history it just loaded (``designer_compute`` builds one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import qmc

from hpo_service.domain import Params, SearchSpace, Trial, TrialSource, TrialState
from hpo_service.engine.designer import Designer, Suggestion
from hpo_service.engine.encoding import SpaceEncoder

__all__ = ["ComputeFn", "PoolSettings", "SuggestionPool", "designer_compute"]

_log = logging.getLogger(__name__)

ComputeFn = Callable[[int, Sequence[Params]], list[Suggestion]]
"""``compute(count, extra_pending)``: ``count`` designer suggestions for the history the
callable closes over, treating ``extra_pending`` (points handed out or pooled but not yet
in that history) as pending too."""


@dataclass(frozen=True)
class PoolSettings:
    """Limits of a ``SuggestionPool``.

    Attributes:
        deadline_s: the longest a request waits for the designer.
        capacity: pooled points kept per study.
        refill_batch: points one background refill asks the designer for.
        max_age_s: pooled points older than this are discarded (the model moved on).
        ttl_s: how long a handed-out point counts as pending for later designer runs
            (it should appear in the stored history well before).
        max_studies: studies whose state is kept (least recently used evicted).
        workers: threads that run designers.
    """

    deadline_s: float = 1.5
    capacity: int = 16
    refill_batch: int = 8
    max_age_s: float = 600.0
    ttl_s: float = 600.0
    max_studies: int = 1024
    workers: int = 2


@dataclass
class _StudyState:
    cond: threading.Condition = field(default_factory=threading.Condition)
    pool: deque[tuple[Suggestion, float, int]] = field(default_factory=deque)
    handed: OrderedDict[str, float] = field(default_factory=OrderedDict)
    in_flight: bool = False
    started: int = 0  # designer runs started; a pooled point remembers which one made it
    last_compute_s: float | None = None
    last_error: str | None = None
    fallbacks: int = 0


def _key(params: Params) -> str:
    return json.dumps(params, sort_keys=True)


class SuggestionPool:
    """Per-study deadline runner and suggestion pool; one instance per API process."""

    def __init__(self, settings: PoolSettings | None = None) -> None:
        self.settings = settings or PoolSettings()
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.workers, thread_name_prefix="hpo-suggest"
        )
        self._studies: OrderedDict[str, _StudyState] = OrderedDict()
        self._lock = threading.Lock()

    def suggest(
        self,
        key: str,
        count: int,
        compute: ComputeFn,
        space: SearchSpace,
        *,
        pending: Sequence[Params] = (),
        seed: int | None = None,
        deadline_s: float | None = None,
    ) -> list[Suggestion]:
        """Return ``count`` suggestions for study ``key`` within the deadline.

        Args:
            key: identifies the study (its id).
            count: number of suggestions wanted.
            compute: runs the designer (see ``ComputeFn``).
            space: the study's space, for fallback points.
            pending: parameters of the study's pending trials, never handed out again.
            seed: seeds the fallback sequence (with the key and a counter).
            deadline_s: overrides the settings' deadline for this request.

        Returns:
            Exactly ``count`` suggestions, each new to the study and to this pool.
        """
        if count <= 0:
            return []
        deadline = time.monotonic() + (
            self.settings.deadline_s if deadline_s is None else deadline_s
        )
        state = self._state(key)
        avoid = {_key(p) for p in pending}
        out: list[Suggestion] = []
        limit = self.settings.deadline_s if deadline_s is None else deadline_s
        with state.cond:
            self._expire(state)
            # Points made by runs started before this request are a last resort: they
            # do not know the latest results. A run already in flight counts as fresh.
            fresh_from = state.started - (1 if state.in_flight else 0)
            runs = 0
            while len(out) < count:
                out += self._take(state, count - len(out), avoid, fresh_from)
                if len(out) >= count:
                    break
                if not state.in_flight:
                    # A run that failed or only repeated known points is not retried more
                    # than once: the fallback is the answer then.
                    if runs >= 2 or (runs and state.last_error is not None):
                        break
                    self._start(state, self._batch(state, count - len(out), limit), compute)
                    runs += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not state.cond.wait(remaining):
                    break
            if len(out) < count:
                out += self._take(state, count - len(out), avoid, 0, stale_before=fresh_from)
            if len(out) < count:
                out += self._fallback(key, state, count - len(out), space, seed, avoid)
            now = time.monotonic()
            for s in out:
                state.handed[_key(s.params)] = now
            if (
                self._slow(state, limit)
                and not state.in_flight
                and len(state.pool) < self.settings.capacity
            ):
                self._start(state, self.settings.refill_batch, compute)
        return out

    def pooled(self, key: str) -> int:
        """How many precomputed points study ``key`` holds (for metrics and tests)."""
        with self._lock:
            state = self._studies.get(key)
        if state is None:
            return 0
        with state.cond:
            return len(state.pool)

    def invalidate(self, key: str) -> None:
        """Drop study ``key``'s pooled points (e.g. after its space or state changed)."""
        with self._lock:
            state = self._studies.get(key)
        if state is not None:
            with state.cond:
                state.pool.clear()

    def wait_idle(self, key: str, timeout_s: float) -> bool:
        """Block until study ``key`` has no designer run in flight; False on timeout."""
        state = self._state(key)
        end = time.monotonic() + timeout_s
        with state.cond:
            while state.in_flight:
                remaining = end - time.monotonic()
                if remaining <= 0 or not state.cond.wait(remaining):
                    return not state.in_flight
        return True

    def close(self) -> None:
        """Stop the worker threads after the runs in flight finish."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- internals (callers hold state.cond where noted) --------------------------------

    def _state(self, key: str) -> _StudyState:
        with self._lock:
            state = self._studies.get(key)
            if state is None:
                state = self._studies[key] = _StudyState()
            self._studies.move_to_end(key)
            while len(self._studies) > self.settings.max_studies:
                oldest = next(iter(self._studies))
                if self._studies[oldest].in_flight or oldest == key:
                    break
                del self._studies[oldest]
            return state

    def _expire(self, state: _StudyState) -> None:
        """Forget stale pooled points and old handed-out keys (holding state.cond)."""
        now = time.monotonic()
        while state.pool and now - state.pool[0][1] > self.settings.max_age_s:
            state.pool.popleft()
        while state.handed and now - next(iter(state.handed.values())) > self.settings.ttl_s:
            state.handed.popitem(last=False)

    def _slow(self, state: _StudyState, limit: float) -> bool:
        """Whether the designer's last run took more than half the deadline."""
        return state.last_compute_s is not None and state.last_compute_s > 0.5 * limit

    def _batch(self, state: _StudyState, wanted: int, limit: float) -> int:
        """Points one run asks for: more than wanted when the designer is slow."""
        return max(wanted, self.settings.refill_batch) if self._slow(state, limit) else wanted

    def _take(
        self,
        state: _StudyState,
        n: int,
        avoid: set[str],
        from_run: int,
        *,
        stale_before: int = 0,
    ) -> list[Suggestion]:
        """Pop up to ``n`` new pooled points made by run ``from_run`` or later.

        Newest points first: they were computed with the most recent history. Points of
        runs before ``stale_before`` are marked ``metadata["pooled"] = True`` (computed
        before the request came, without its latest results). The caller holds
        ``state.cond``.
        """
        out: list[Suggestion] = []
        entries = list(state.pool)
        taken: set[int] = set()
        # Newest run first; within a run, the designer's order.
        for i in sorted(range(len(entries)), key=lambda j: -entries[j][2]):
            if len(out) >= n:
                break
            s, _, run = entries[i]
            k = _key(s.params)
            if k in avoid or k in state.handed:
                taken.add(i)  # stale: repeats a known point
                continue
            if run < from_run:
                continue
            avoid.add(k)
            out.append(
                Suggestion(s.params, s.source, {**s.metadata, "pooled": True})
                if run < stale_before
                else s
            )
            taken.add(i)
        state.pool = deque(e for i, e in enumerate(entries) if i not in taken)
        return out

    def _start(self, state: _StudyState, n: int, compute: ComputeFn) -> None:
        """Submit one designer run whose output goes to the pool (holding state.cond)."""
        extra = [s.params for s, _, _ in state.pool]
        known = {_key(p) for p in extra}
        extra += [json.loads(k) for k in state.handed if k not in known]
        state.in_flight = True
        run = state.started
        state.started += 1
        self._executor.submit(self._run, state, n, compute, extra, run)

    def _run(
        self, state: _StudyState, n: int, compute: ComputeFn, extra: list[Params], run: int
    ) -> None:
        started = time.monotonic()
        result: list[Suggestion] = []
        error: str | None = None
        try:
            result = compute(n, extra)
        except Exception as exc:  # a designer bug must not take the pool down
            error = f"{type(exc).__name__}: {exc}"
            _log.exception("designer run failed")
        with state.cond:
            state.in_flight = False
            state.last_compute_s = time.monotonic() - started
            state.last_error = error
            now = time.monotonic()
            seen = set(state.handed) | {_key(s.params) for s, _, _ in state.pool}
            for s in result:
                k = _key(s.params)
                if k not in seen:
                    seen.add(k)
                    state.pool.append((s, now, run))
            while len(state.pool) > self.settings.capacity:
                state.pool.popleft()
            state.cond.notify_all()

    def _fallback(
        self,
        key: str,
        state: _StudyState,
        n: int,
        space: SearchSpace,
        seed: int | None,
        avoid: set[str],
    ) -> list[Suggestion]:
        """``n`` new Sobol points, tagged as fallbacks with the reason (holding state.cond)."""
        if state.last_error is not None:
            reason = f"designer failed: {state.last_error}"
        else:
            reason = "designer missed the deadline and no precomputed point was available"
        encoder = SpaceEncoder(space)
        digest = hashlib.sha256(f"{key}:{seed}:{state.fallbacks}".encode()).digest()
        state.fallbacks += 1
        sampler = qmc.Sobol(d=encoder.dim, scramble=True, seed=int.from_bytes(digest[:4], "little"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            xs = np.asarray(sampler.random(max(8, 4 * n)), dtype=np.float64)
        out: list[Suggestion] = []
        repeats: list[Params] = []
        for params in encoder.decode_many(xs):
            k = _key(params)
            if k in avoid or k in state.handed:
                repeats.append(params)
                continue
            avoid.add(k)
            out.append(Suggestion(params, TrialSource.FALLBACK_RANDOM, {"reason": reason}))
            if len(out) == n:
                return out
        # Only a tiny, nearly exhausted discrete space gets here.
        for params in repeats[: n - len(out)]:
            meta = {"reason": reason, "repeat": True}
            out.append(Suggestion(params, TrialSource.FALLBACK_RANDOM, meta))
        return out


def designer_compute(
    make_designer: Callable[[], Designer],
    completed: Sequence[Trial],
    pending: Sequence[Trial],
) -> ComputeFn:
    """A ``ComputeFn`` that builds a designer and feeds it this history.

    Args:
        make_designer: builds the study's designer (``registry.make_designer``).
        completed: the study's finished trials, as loaded for this request.
        pending: its pending trials.
    """
    study_id = completed[0].study_id if completed else (pending[0].study_id if pending else "")

    known = {_key(t.params) for t in (*completed, *pending)}

    def compute(count: int, extra_pending: Sequence[Params]) -> list[Suggestion]:
        # Handed-out points already stored as trials are in the history: passing them
        # again would change what a fast designer computes (and its reproducibility).
        fresh = [p for p in extra_pending if _key(p) not in known]
        extra = [
            Trial(
                id=f"pool-{i}",
                study_id=study_id,
                number=-1 - i,
                params=dict(p),
                state=TrialState.REQUESTED,
            )
            for i, p in enumerate(fresh)
        ]
        designer = make_designer()
        designer.update(completed, [*pending, *extra])
        return designer.suggest(count)

    return compute
