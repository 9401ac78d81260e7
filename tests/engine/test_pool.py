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
from hpo_service.engine.pool import PoolSettings, SuggestionPool, designer_compute
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
        # The designer is slow again: the request cannot wait for a fresh run, so it
        # gets the precomputed points, and the run it started refills the pool with a
        # whole batch (the designer was slow, so it asks for refill_batch points).
        again = pool.suggest("s", 2, slow, SPACE, seed=3)
        assert [s.source for s in again] == [TrialSource.ENGINE, TrialSource.ENGINE]
        assert {s.params["x"] for s in again} == {0.1, 0.2}
        release.set()
        assert pool.wait_idle("s", 30)
        assert calls == [2, 4]
        assert pool.pooled("s") == 4
    finally:
        release.set()
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
        pool._state("s").pool.append((Suggestion({"x": 0.9, "k": 1}), time.monotonic(), -1))
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
