from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from hpo_service.domain import (
    FloatParameter,
    IntParameter,
    Objective,
    Params,
    SearchSpace,
    StudyConfig,
    TrialSource,
)
from hpo_service.engine.designer import Suggestion
from hpo_service.engine.pool import PoolSettings, SuggestionPool, _Pooled, designer_compute
from hpo_service.engine.registry import make_designer

SPACE = SearchSpace(
    parameters=[FloatParameter(name="x", low=0, high=1), IntParameter(name="k", low=1, high=9)]
)
CONFIG = StudyConfig(space=SPACE, objective=Objective(metric="y"), algorithm="sobol", seed=1)


def _sobol_compute() -> object:
    return designer_compute(lambda: make_designer(CONFIG, 1), [], [])


def test_fast_designer_answers_directly() -> None:
    pool = SuggestionPool(PoolSettings(deadline_s=30.0))
    try:
        out = pool.suggest(
            "s", 3, designer_compute(lambda: make_designer(CONFIG, 1), [], []), SPACE
        )
        assert len(out) == 3
        assert all(s.source == TrialSource.ENGINE for s in out)
        assert len({str(sorted(s.params.items())) for s in out}) == 3
    finally:
        pool.close()


def test_slow_designer_falls_back_then_serves_from_pool() -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        calls.append(count)
        release.wait(30)
        taken = {p["x"] for p in extra}
        free = [0.1 * i for i in range(1, 40) if 0.1 * i not in taken]
        return [Suggestion({"x": x, "k": 1}) for x in free[:count]]

    pool = SuggestionPool(PoolSettings(deadline_s=0.01, capacity=8, refill_batch=4))
    try:
        out = pool.suggest("s", 2, slow, SPACE, seed=3)
        assert len(out) == 2
        assert all(s.source == TrialSource.FALLBACK_RANDOM for s in out)
        assert "deadline" in out[0].metadata["reason"]
        release.set()
        assert pool.wait_idle("s", 30)
        assert pool.pooled("s") == 2
        release.clear()
        # The designer is slow again: the request cannot wait for its own run, so it gets
        # the precomputed points, tagged as such (made before its history), and its run
        # asks for exactly the two points wanted.
        again = pool.suggest("s", 2, slow, SPACE, seed=3)
        assert [s.source for s in again] == [TrialSource.ENGINE, TrialSource.ENGINE]
        assert all(s.metadata["pooled"] is True for s in again)
        assert {s.params["x"] for s in again} == {0.1, 0.2}
        release.set()
        assert pool.wait_idle("s", 30)
        assert calls == [2, 2]
        # Its late run did not see the pooled points as pending (nobody had them yet), so
        # it proposed them again: repeats of handed-out points are dropped.
        assert pool.pooled("s") == 0
    finally:
        release.set()
        pool.close()


class _Blocking:
    """A designer stub whose runs block until ``gate`` opens; records every call."""

    def __init__(self, base: float) -> None:
        self.gate = threading.Event()
        self.base = base
        self.calls: list[tuple[int, list[Params]]] = []
        self.entered = threading.Semaphore(0)  # released once per call, when it starts

    def __call__(self, count: int, extra: Sequence[Params]) -> list[Suggestion]:
        self.calls.append((count, list(extra)))
        self.entered.release()
        self.gate.wait(30)
        taken = {p["x"] for p in extra}
        free = [round(self.base + 0.01 * i, 2) for i in range(1, 40)]
        return [Suggestion({"x": x, "k": 1}) for x in free if x not in taken][:count]


def test_refill_from_an_older_history_is_not_fresh() -> None:
    # Every stub exists before ``try``: the ``finally`` opens all their gates, and a name
    # bound halfway through would mask an early failure with an UnboundLocalError.
    old, new, blocked = _Blocking(0.1), _Blocking(0.5), _Blocking(0.8)
    pool = SuggestionPool(PoolSettings(deadline_s=0.2, refill_batch=4))
    try:
        first = pool.suggest("s", 1, old, SPACE, history="h1", seed=0)
        assert first[0].source == TrialSource.FALLBACK_RANDOM
        old.gate.set()
        assert pool.wait_idle("s", 30)  # the late run was slow: a point for the pool
        old.gate.clear()
        # Same history: the pooled point is as fresh as a new run; the designer is slow,
        # so the request ends by starting a background refill (blocked here).
        second = pool.suggest("s", 1, old, SPACE, history="h1", seed=0)
        assert second[0].params["x"] == 0.11
        assert "pooled" not in second[0].metadata
        assert old.entered.acquire(timeout=30)
        assert old.entered.acquire(timeout=30)
        assert [c for c, _ in old.calls] == [1, 4]
        # New results arrived (history h2): the refill in flight was started with h1, so
        # the request does not wait for it but runs the designer itself, for exactly
        # the one point it wants although the designer counts as slow.
        new.gate.set()
        third = pool.suggest("s", 1, new, SPACE, history="h2", seed=0, deadline_s=5.0)
        assert third[0].params["x"] == 0.51
        assert "pooled" not in third[0].metadata
        assert [c for c, _ in new.calls] == [1]
        old.gate.set()
        assert pool.wait_idle("s", 30)
        # The refill's points were computed without h2's results: tagged when handed out.
        fourth = pool.suggest("s", 1, blocked, SPACE, history="h2", seed=0)
        assert 0.1 < fourth[0].params["x"] < 0.2
        assert fourth[0].metadata["pooled"] is True
    finally:
        for stub in (old, new, blocked):
            stub.gate.set()
        pool.close()


def test_only_unstored_handed_out_points_are_extra_pending() -> None:
    # The designer returns one point more than asked: the spare one stays in the pool.
    def two(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        return [Suggestion({"x": 0.1, "k": 1}), Suggestion({"x": 0.2, "k": 1})][: count + 1]

    recorded: list[list[Params]] = []

    def record(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        recorded.append(list(extra))
        return [Suggestion({"x": 0.3 + 0.01 * len(recorded), "k": 1})]

    pool = SuggestionPool(PoolSettings(deadline_s=30.0))
    try:
        assert pool.suggest("s", 1, two, SPACE)[0].params == {"x": 0.1, "k": 1}
        assert pool.pooled("s") == 1  # x = 0.2, handed to nobody
        pool.suggest("s", 1, record, SPACE)
        pool.suggest("s", 1, record, SPACE, completed=[{"x": 0.1, "k": 1}])
        # The pooled point is not pending (nobody evaluates it); the handed-out 0.1 is,
        # until the history holds it.
        assert recorded[0] == [{"x": 0.1, "k": 1}]
        assert {"x": 0.1, "k": 1} not in recorded[1]
        assert all(p["x"] != 0.2 for extra in recorded for p in extra)
    finally:
        pool.close()


def test_released_points_are_no_longer_pending() -> None:
    recorded: list[list[Params]] = []

    def record(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        recorded.append(list(extra))
        return [Suggestion({"x": 0.1 * len(recorded), "k": 1})]

    pool = SuggestionPool(PoolSettings(deadline_s=30.0))
    try:
        (got,) = pool.suggest("s", 1, record, SPACE)
        assert pool.handed_out("s") == [got.params]
        pool.release("s", [got.params])
        assert pool.handed_out("s") == []
        pool.suggest("s", 1, record, SPACE)
        assert recorded[1] == []
    finally:
        pool.close()


def test_fallback_reason_names_the_current_run_not_an_earlier_failure() -> None:
    fail = True
    gate = threading.Event()

    def flaky(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        if fail:
            raise RuntimeError("boom")
        gate.wait(30)
        return [Suggestion({"x": 0.5, "k": 1})]

    pool = SuggestionPool(PoolSettings(deadline_s=0.2))
    try:
        assert "boom" in pool.suggest("s", 1, flaky, SPACE, seed=0)[0].metadata["reason"]
        fail = False
        reason = pool.suggest("s", 1, flaky, SPACE, seed=0)[0].metadata["reason"]
        assert "failed" not in reason
        assert "slower than the deadline" in reason
    finally:
        gate.set()
        pool.close()


def test_pending_and_completed_points_are_never_handed_out() -> None:
    def fixed(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        return [Suggestion({"x": 0.5, "k": 2}), Suggestion({"x": 0.6, "k": 2})]

    pool = SuggestionPool(PoolSettings(deadline_s=30.0))
    try:
        done, queued = {"x": 0.5, "k": 2}, {"x": 0.6, "k": 2}
        out = pool.suggest("s", 1, fixed, SPACE, completed=[done], pending=[queued], seed=0)
        assert out[0].params not in (done, queued)
        assert out[0].source == TrialSource.FALLBACK_RANDOM
    finally:
        pool.close()


def test_fresh_points_are_preferred_to_precomputed_ones() -> None:
    made: list[float] = []

    def counting(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        out = [
            Suggestion({"x": round(0.01 * (len(made) + i + 1), 2), "k": 1}) for i in range(count)
        ]
        made.extend(s.params["x"] for s in out)
        return out

    pool = SuggestionPool(PoolSettings(deadline_s=30.0))
    try:
        first = pool.suggest("s", 1, counting, SPACE)
        pool._state("s").pool.append(
            _Pooled(Suggestion({"x": 0.9, "k": 1}), time.monotonic(), -1, None)
        )
        second = pool.suggest("s", 1, counting, SPACE)
        assert [s.params["x"] for s in first + second] == [0.01, 0.02]
        assert pool.pooled("s") == 1
    finally:
        pool.close()


def test_designer_error_is_reported_in_fallback_reason() -> None:
    def broken(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        raise RuntimeError("boom")

    pool = SuggestionPool(PoolSettings(deadline_s=30.0))
    try:
        out = pool.suggest("s", 1, broken, SPACE, seed=0)
        assert out[0].source == TrialSource.FALLBACK_RANDOM
        assert "boom" in out[0].metadata["reason"]
    finally:
        pool.close()


def test_concurrent_requests_never_share_a_point() -> None:
    # A deterministic designer that ignores the extra pending points would return the
    # same point to everyone; the pool must still hand each one out only once.
    def same(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        taken = {p["x"] for p in extra}
        free = [i / 100 for i in range(100) if i / 100 not in taken]
        return [Suggestion({"x": x, "k": 1}) for x in free[:count]]

    pool = SuggestionPool(PoolSettings(deadline_s=30.0, workers=2))
    results: list[list[Suggestion]] = []
    lock = threading.Lock()

    def worker() -> None:
        got = pool.suggest("s", 2, same, SPACE, seed=0)
        with lock:
            results.append(got)

    try:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        points = [s.params["x"] for got in results for s in got]
        assert len(points) == 16
        assert len(set(points)) == 16
    finally:
        pool.close()


def test_pending_points_are_never_handed_out() -> None:
    def fixed(count: int, extra: Sequence[Params]) -> list[Suggestion]:
        return [Suggestion({"x": 0.5, "k": 2})]

    pool = SuggestionPool(PoolSettings(deadline_s=30.0))
    try:
        out = pool.suggest("s", 1, fixed, SPACE, pending=[{"x": 0.5, "k": 2}], seed=0)
        assert out[0].params != {"x": 0.5, "k": 2}
        assert out[0].source == TrialSource.FALLBACK_RANDOM
    finally:
        pool.close()


def test_state_is_bounded() -> None:
    pool = SuggestionPool(PoolSettings(deadline_s=30.0, max_studies=3))
    compute = designer_compute(lambda: make_designer(CONFIG, 1), [], [])
    try:
        for i in range(10):
            pool.suggest(f"s{i}", 1, compute, SPACE)
        assert len(pool._studies) <= 4
    finally:
        pool.close()


def test_requests_do_not_queue_behind_other_studies_refills() -> None:
    slow = _Blocking(0.1)
    pool = SuggestionPool(PoolSettings(deadline_s=0.2, refill_batch=4, workers=1))
    try:
        pool.suggest("a", 1, slow, SPACE, history="h", seed=0)
        slow.gate.set()
        assert pool.wait_idle("a", 30)
        slow.gate.clear()
        pool.suggest("a", 1, slow, SPACE, history="h", seed=0)  # ends with a blocked refill
        assert slow.entered.acquire(timeout=30)
        assert slow.entered.acquire(timeout=30)
        assert [c for c, _ in slow.calls] == [1, 4]
        fast = _Blocking(0.5)
        fast.gate.set()
        # The only request worker is free: study b's run does not wait for a's refill.
        (got,) = pool.suggest("b", 1, fast, SPACE, seed=0, deadline_s=5.0)
        assert got.source == TrialSource.ENGINE
        assert got.params["x"] == 0.51
    finally:
        slow.gate.set()
        pool.close()
