"""The suggestion pool as the service uses it: through the HTTP API and the service layer."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

from hpo_service.client import HPOClient
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.domain import (
    Objective,
    Principal,
    Role,
    SearchSpace,
    StudyConfig,
    StudyState,
    Trial,
    TrialSource,
)
from hpo_service.engine import registry
from hpo_service.engine.designer import Suggestion
from hpo_service.engine.pool import PoolSettings
from hpo_service.services import studies, suggestions, trials
from hpo_service.services.suggestion_pool import replace_pool, shared_pool
from tests.builders import study

ME = Principal(key_id="k", role=Role.CLIENT, tenant="acme")
X_SPACE = {"parameters": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}]}


class _Gate:
    """A designer whose runs block until released and that ignores pending points.

    Ignoring pending points is the worst case for duplicates: only the pool's memory of
    handed-out points keeps two requests from receiving the same point.
    """

    def __init__(self) -> None:
        self.open = threading.Event()
        self.calls: list[int] = []

    def factory(self, config: StudyConfig, seed: int | None) -> _GateDesigner:
        return _GateDesigner(self)


class _GateDesigner:
    def __init__(self, gate: _Gate) -> None:
        self.gate = gate

    def update(self, completed: Sequence[Trial], pending: Sequence[Trial]) -> None:
        pass

    def suggest(self, count: int) -> list[Suggestion]:
        self.gate.calls.append(count)
        self.gate.open.wait(30)
        return [Suggestion({"x": (i + 1) / 10}) for i in range(count)]


@pytest.fixture
def settings(db: Database) -> Settings:
    """The API's settings with a short suggestion deadline (the route passes it on)."""
    return Settings(
        database_url=db.url,
        lease_seconds=300,
        reclaim_interval_seconds=3600,
        suggestion_deadline_seconds=0.2,
    )


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Gate]:
    g = _Gate()
    monkeypatch.setitem(registry._FACTORIES, "gate-test", g.factory)
    replace_pool(PoolSettings(deadline_s=30.0, refill_batch=4, workers=2))
    try:
        yield g
    finally:
        g.open.set()
        replace_pool()


def test_slow_designer_gives_tagged_fallback_then_pooled_points(
    client: HPOClient, worker: HPOClient, gate: _Gate
) -> None:
    sid = client.create_study(study(space=X_SPACE, algorithm="gate-test"))["id"]
    (first,) = worker.suggest(sid, "w1", 1)["trials"]
    assert first["source"] == TrialSource.FALLBACK_RANDOM
    assert "deadline" in first["metadata"]["reason"]
    gate.open.set()
    assert shared_pool().wait_idle(sid, 30)
    assert shared_pool().pooled(sid) == 1  # the late run's point, x = 0.1
    gate.open.clear()
    # Blocked again: the request cannot wait for its own run, and is served from the pool
    # (a point computed before the first trial existed, so tagged), not the fallback.
    (second,) = worker.suggest(sid, "w2", 1)["trials"]
    assert second["source"] == TrialSource.ENGINE
    assert second["params"] == {"x": 0.1}
    assert second["metadata"]["pooled"] is True
    # Its own run asks for exactly the one point wanted, although the designer is slow.
    assert gate.calls == [1, 1]


def _request(db: Database, sid: str, count: int = 1, worker_id: str = "w") -> list[Trial]:
    return suggestions.request_suggestions(
        db, ME, sid, worker_id=worker_id, count=count, now=utcnow(), lease_seconds=60
    ).trials


def _study(db: Database, algorithm: str = "sobol") -> str:
    return studies.create_study(
        db,
        ME,
        studies.NewStudy(
            name=algorithm,
            objective=Objective(metric="y"),
            space=SearchSpace.model_validate(X_SPACE),
            algorithm=algorithm,
            seed=1,
        ),
        default_max_attempts=3,
    ).id


@pytest.fixture
def fresh_pool() -> Iterator[None]:
    replace_pool(PoolSettings(deadline_s=30.0))
    try:
        yield
    finally:
        replace_pool()


def test_points_of_a_paused_study_are_released(
    db: Database, fresh_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = _study(db)
    run_designer = suggestions._run_designer

    def then_pause(study_id: str, snap: object, deadline_s: float | None) -> list[Suggestion]:
        out = run_designer(study_id, snap, deadline_s)  # type: ignore[arg-type]
        studies.update_study(db, ME, sid, studies.StudyChanges(state=StudyState.PAUSED))
        return out

    monkeypatch.setattr(suggestions, "_run_designer", then_pause)
    assert _request(db, sid) == []
    assert shared_pool().handed_out(sid) == []


def test_points_discarded_by_an_optimistic_retry_are_released(
    db: Database, fresh_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = _study(db)
    run_designer = suggestions._run_designer
    calls: list[int] = []

    def then_queue(study_id: str, snap: object, deadline_s: float | None) -> list[Suggestion]:
        out = run_designer(study_id, snap, deadline_s)  # type: ignore[arg-type]
        if not calls:  # another request created a trial meanwhile: the first answer is void
            trials.add_trials(db, ME, sid, [trials.NewTrial(params={"x": 0.5})], now=utcnow())
        calls.append(1)
        return out

    monkeypatch.setattr(suggestions, "_run_designer", then_queue)
    leased = _request(db, sid, 2)  # the queued trial came too late for this request
    assert len(calls) == 2
    assert len(leased) == 2
    assert shared_pool().handed_out(sid) == [t.params for t in leased]


def test_points_beyond_the_budget_and_of_a_failed_write_are_released(
    db: Database, fresh_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = _study(db)
    run_designer = suggestions._run_designer

    def then_shrink(study_id: str, snap: object, deadline_s: float | None) -> list[Suggestion]:
        out = run_designer(study_id, snap, deadline_s)  # type: ignore[arg-type]
        changes = studies.StudyChanges(max_trials=1, max_trials_set=True)
        studies.update_study(db, ME, sid, changes)
        return out

    monkeypatch.setattr(suggestions, "_run_designer", then_shrink)
    (leased,) = _request(db, sid, 3)  # asked for three, the budget shrank to one
    assert shared_pool().handed_out(sid) == [leased.params]

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise RuntimeError("disk full")

    changes = studies.StudyChanges(max_trials=5, max_trials_set=True)
    studies.update_study(db, ME, sid, changes)
    monkeypatch.setattr(suggestions, "_run_designer", run_designer)
    monkeypatch.setattr(suggestions, "_store_new", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _request(db, sid, worker_id="w2")
    assert shared_pool().handed_out(sid) == [leased.params]


@pytest.mark.committed  # six requests race on their own connections
def test_concurrent_requests_never_receive_the_same_point(db: Database, gate: _Gate) -> None:
    gate.open.set()
    sid = _study(db, "gate-test")
    got: list[Trial] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        leased = suggestions.request_suggestions(
            db, ME, sid, worker_id=f"w{i}", count=2, now=utcnow(), lease_seconds=60
        ).trials
        with lock:
            got.extend(leased)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    points = [t.params["x"] for t in got]
    assert len(points) == 12
    assert len(set(points)) == 12
    # The designer keeps proposing 0.1, 0.2, ...: after the first request, only the pool's
    # memory and the fallback keep the answers distinct, and the fallback says so.
    assert any(t.source == TrialSource.FALLBACK_RANDOM for t in got)
