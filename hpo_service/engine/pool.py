"""Bounded-latency suggestions: a deadline on the designer, a per-study pool, a fallback.

A request must not wait for a slow model. ``SuggestionPool.suggest`` runs the designer in
a worker thread and waits at most ``deadline_s``:

1. points from a designer run made with this request's history are handed out (the
   normal case: a "fresh" suggestion from the model updated with the latest results).
   Such a run asks for exactly the points wanted, with only the handed-out points not
   yet in the history as extra pending, so its answer is that of a direct call. A run
   already in flight counts only if it was started with the same history (the
   ``history`` key, see ``history_key``); otherwise the request starts its own;
2. once the deadline has passed, points precomputed earlier are handed out, tagged
   ``metadata["pooled"] = True``: each was computed by the designer with the history of
   its moment, and a computation that misses its deadline is not wasted: its points land
   in the pool when it finishes;
3. otherwise a scrambled-Sobol point, tagged ``source="fallback_random"`` with the reason
   in ``metadata["reason"]``.

So a fast designer is never bypassed (its answers are as reproducible as calling it
directly), and a slow one costs a request at most the deadline. When the designer is
slow (its last run took more than half the deadline) and the study has no run in flight,
a request ends by starting a background refill of ``refill_batch`` points — one model
fit, one joint batch, with the pooled points as extra pending so the batch spreads out.
Refills run on their own thread, so a request never queues behind other studies'
refills.

Two concurrent requests for one study never receive the same new point: pooled points
are taken under the study's lock, every point handed out is remembered for ``ttl_s`` and
passed to later designer runs as an extra pending point (until the caller stores it, or
``release`` forgets it because it was not stored), and designer output that repeats a
handed-out point is dropped. This holds within one process; across processes the service
serialises suggestion generation per study.

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

__all__ = ["ComputeFn", "PoolSettings", "SuggestionPool", "designer_compute", "history_key"]

_log = logging.getLogger(__name__)

ComputeFn = Callable[[int, Sequence[Params]], list[Suggestion]]
"""``compute(count, extra_pending)``: ``count`` designer suggestions for the history the
callable closes over, treating ``extra_pending`` (points handed out but not yet in that
history; for background refills, pooled points too) as pending."""


@dataclass(frozen=True)
class PoolSettings:
    """Limits of a ``SuggestionPool``.

    Attributes:
        deadline_s: the longest a request waits for the designer.
        capacity: pooled points kept per study.
        refill_batch: points one background refill asks the designer for (a request's
            own run asks for exactly what it wants).
        max_age_s: pooled points older than this are discarded (the model moved on).
        ttl_s: how long a handed-out point counts as pending for later designer runs
            (it should appear in the stored history well before, or be released).
        max_studies: studies whose state is kept (least recently used evicted).
        workers: threads that run requests' own designer runs; background refills have
            one thread of their own.
    """

    deadline_s: float = 1.5
    capacity: int = 16
    refill_batch: int = 8
    max_age_s: float = 600.0
    ttl_s: float = 600.0
    max_studies: int = 1024
    workers: int = 2


_MAX_RUNS_PER_STUDY = 2
"""Designer runs in flight per study: a stale one and a fresh one; more only queue."""

_ERRORS_KEPT = 8


@dataclass(frozen=True)
class _Pooled:
    suggestion: Suggestion
    made_at: float
    run: int  # the designer run that made it
    history: str | None  # the history that run was computed with


@dataclass
class _StudyState:
    cond: threading.Condition = field(default_factory=threading.Condition)
    pool: deque[_Pooled] = field(default_factory=deque)
    handed: OrderedDict[str, float] = field(default_factory=OrderedDict)
    running: dict[int, str | None] = field(default_factory=dict)  # run → its history
    started: int = 0  # designer runs started, numbers the next one
    last_compute_s: float | None = None
    errors: OrderedDict[int, str] = field(default_factory=OrderedDict)  # recent failed runs
    fallbacks: int = 0


def _key(params: Params) -> str:
    return json.dumps(params, sort_keys=True)


def history_key(completed: Sequence[Trial], pending: Sequence[Trial]) -> str:
    """A key that changes whenever the history a designer sees changes.

    Two requests with the same key would feed a designer the same trials (numbers,
    states, results), so a run started by one is fresh for the other.
    """
    digest = hashlib.sha256()
    for t in sorted((*completed, *pending), key=lambda t: t.number):
        result = sorted((t.result or {}).items())
        digest.update(f"{t.number}:{t.state}:{result!r}:{len(t.measurements)};".encode())
    return digest.hexdigest()


class SuggestionPool:
    """Per-study deadline runner and suggestion pool; one instance per API process."""

    def __init__(self, settings: PoolSettings | None = None) -> None:
        self.settings = settings or PoolSettings()
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.workers, thread_name_prefix="hpo-suggest"
        )
        self._refill_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpo-refill")
        self._studies: OrderedDict[str, _StudyState] = OrderedDict()
        self._lock = threading.Lock()

    def suggest(
        self,
        key: str,
        count: int,
        compute: ComputeFn,
        space: SearchSpace,
        *,
        completed: Sequence[Params] = (),
        pending: Sequence[Params] = (),
        history: str | None = None,
        seed: int | None = None,
        deadline_s: float | None = None,
    ) -> list[Suggestion]:
        """Return ``count`` suggestions for study ``key`` within the deadline.

        Args:
            key: identifies the study (its id).
            count: number of suggestions wanted.
            compute: runs the designer (see ``ComputeFn``).
            space: the study's space, for fallback points.
            completed: parameters of the study's finished trials, never handed out again.
            pending: parameters of the study's pending trials, never handed out again.
            history: identifies the history ``compute`` closes over (``history_key``);
                runs and pooled points made with the same history count as fresh. None:
                only this request's own runs are fresh.
            seed: seeds the fallback sequence (with the key and a counter).
            deadline_s: overrides the settings' deadline for this request.

        Returns:
            Exactly ``count`` suggestions, each new to the study and to this pool.
        """
        if count <= 0:
            return []
        limit = self.settings.deadline_s if deadline_s is None else deadline_s
        deadline = time.monotonic() + limit
        state = self._state(key)
        avoid = {_key(p) for p in (*completed, *pending)}
        out: list[Suggestion] = []
        mine: set[int] = set()  # runs this request started

        def fresh(run: int, made_with: str | None) -> bool:
            return run in mine or (history is not None and made_with == history)

        with state.cond:
            self._expire(state)
            failure: str | None = None
            while len(out) < count:
                out += self._take(state, count - len(out), avoid, fresh, only_fresh=True)
                if len(out) >= count:
                    break
                failure = next((state.errors[r] for r in mine if r in state.errors), None)
                if not any(fresh(r, h) for r, h in state.running.items()):
                    # A run that failed or only repeated known points is not retried more
                    # than once: the fallback is the answer then.
                    if len(mine) >= 2 or failure is not None:
                        break
                    if len(state.running) < _MAX_RUNS_PER_STUDY:
                        extra = self._handed_extra(state, avoid)
                        mine.add(self._start(state, count - len(out), compute, extra, history))
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not state.cond.wait(remaining):
                    break
            if len(out) < count:
                out += self._take(state, count - len(out), avoid, fresh, only_fresh=False)
            if len(out) < count:
                failure = next((state.errors[r] for r in mine if r in state.errors), None)
                if failure is not None:
                    reason = f"designer failed: {failure}"
                elif mine and not any(r in state.running for r in mine):
                    reason = "designer proposed only points already known"
                else:
                    reason = "designer slower than the deadline, no precomputed point left"
                out += self._fallback(key, state, count - len(out), space, seed, avoid, reason)
            now = time.monotonic()
            for s in out:
                state.handed[_key(s.params)] = now
            if (
                self._slow(state, limit)
                and not state.running
                and len(state.pool) < self.settings.capacity
            ):
                extra = self._handed_extra(state, avoid)
                known = set(avoid) | {_key(p) for p in extra}
                for e in state.pool:
                    k = _key(e.suggestion.params)
                    if k not in known:
                        known.add(k)
                        extra.append(e.suggestion.params)
                self._start(state, self.settings.refill_batch, compute, extra, history, True)
        return out

    def release(self, key: str, params: Sequence[Params]) -> None:
        """Forget that ``params`` were handed out: the caller did not store them.

        Otherwise they would count as pending for later designer runs until ``ttl_s``
        passes, pushing new proposals away from points nobody evaluates.
        """
        with self._lock:
            state = self._studies.get(key)
        if state is None:
            return
        with state.cond:
            for p in params:
                state.handed.pop(_key(p), None)

    def pooled(self, key: str) -> int:
        """How many precomputed points study ``key`` holds (for metrics and tests)."""
        with self._lock:
            state = self._studies.get(key)
        if state is None:
            return 0
        with state.cond:
            return len(state.pool)

    def handed_out(self, key: str) -> list[Params]:
        """The points of study ``key`` that count as handed out (for metrics and tests)."""
        with self._lock:
            state = self._studies.get(key)
        if state is None:
            return []
        with state.cond:
            return [json.loads(k) for k in state.handed]

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
            while state.running:
                remaining = end - time.monotonic()
                if remaining <= 0 or not state.cond.wait(remaining):
                    return not state.running
        return True

    def close(self) -> None:
        """Stop the worker threads after the runs in flight finish."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._refill_executor.shutdown(wait=True, cancel_futures=True)

    # -- internals (callers hold state.cond where noted) --------------------------------

    def _state(self, key: str) -> _StudyState:
        with self._lock:
            state = self._studies.get(key)
            if state is None:
                state = self._studies[key] = _StudyState()
            self._studies.move_to_end(key)
            while len(self._studies) > self.settings.max_studies:
                oldest = next(iter(self._studies))
                if self._studies[oldest].running or oldest == key:
                    break
                del self._studies[oldest]
            return state

    def _expire(self, state: _StudyState) -> None:
        """Forget stale pooled points and old handed-out keys (holding state.cond)."""
        now = time.monotonic()
        while state.pool and now - state.pool[0].made_at > self.settings.max_age_s:
            state.pool.popleft()
        while state.handed and now - next(iter(state.handed.values())) > self.settings.ttl_s:
            state.handed.popitem(last=False)

    def _slow(self, state: _StudyState, limit: float) -> bool:
        """Whether the designer's last run took more than half the deadline."""
        return state.last_compute_s is not None and state.last_compute_s > 0.5 * limit

    @staticmethod
    def _handed_extra(state: _StudyState, avoid: set[str]) -> list[Params]:
        """Handed-out points not in the request's history: pending for the next run.

        Points already stored are in the history; passing them again would change what
        a designer computes. Pooled points nobody was given are not pending.
        """
        return [json.loads(k) for k in state.handed if k not in avoid]

    def _take(
        self,
        state: _StudyState,
        n: int,
        avoid: set[str],
        fresh: Callable[[int, str | None], bool],
        *,
        only_fresh: bool,
    ) -> list[Suggestion]:
        """Pop up to ``n`` new pooled points; with ``only_fresh``, only fresh ones.

        Newest points first: they were computed with the most recent history. A point is
        fresh when ``fresh`` accepts its run and history; others are marked
        ``metadata["pooled"] = True`` (made without the request's latest results). Points
        that repeat a known or handed-out point, or each other, are dropped. The caller
        holds ``state.cond``.
        """
        out: list[Suggestion] = []
        entries = list(state.pool)
        taken: set[int] = set()
        # Newest run first; within a run, the designer's order.
        for i in sorted(range(len(entries)), key=lambda j: -entries[j].run):
            if len(out) >= n:
                break
            e = entries[i]
            k = _key(e.suggestion.params)
            if k in avoid or k in state.handed:
                taken.add(i)  # stale: repeats a known point
                continue
            s = e.suggestion
            is_fresh = fresh(e.run, e.history)
            if only_fresh and not is_fresh:
                continue
            avoid.add(k)
            out.append(
                s if is_fresh else Suggestion(s.params, s.source, {**s.metadata, "pooled": True})
            )
            taken.add(i)
        state.pool = deque(e for i, e in enumerate(entries) if i not in taken)
        return out

    def _start(
        self,
        state: _StudyState,
        n: int,
        compute: ComputeFn,
        extra: list[Params],
        history: str | None,
        refill: bool = False,
    ) -> int:
        """Submit one designer run whose output goes to the pool; returns its number.

        The caller holds ``state.cond``. Refills go to their own thread, so requests'
        runs never wait behind them.
        """
        run = state.started
        state.started += 1
        state.running[run] = history
        executor = self._refill_executor if refill else self._executor
        executor.submit(self._run, state, n, compute, extra, run, history)
        return run

    def _run(
        self,
        state: _StudyState,
        n: int,
        compute: ComputeFn,
        extra: list[Params],
        run: int,
        history: str | None,
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
            state.running.pop(run, None)
            state.last_compute_s = time.monotonic() - started
            if error is not None:
                state.errors[run] = error
                while len(state.errors) > _ERRORS_KEPT:
                    state.errors.popitem(last=False)
            now = time.monotonic()
            result_keys = {_key(s.params) for s in result}
            # A pooled point this run made again now belongs to this (newer) run.
            state.pool = deque(
                e for e in state.pool if _key(e.suggestion.params) not in result_keys
            )
            seen = set(state.handed)
            for s in result:
                k = _key(s.params)
                if k not in seen:
                    seen.add(k)
                    state.pool.append(_Pooled(s, now, run, history))
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
        reason: str,
    ) -> list[Suggestion]:
        """``n`` new Sobol points, tagged as fallbacks with the reason (holding state.cond)."""
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
