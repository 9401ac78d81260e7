from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import text

from hpo_service.api.housekeeping import Housekeeper
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.models import TrialRow
from hpo_service.domain import Objective, Principal, Role, SearchSpace, TrialState
from hpo_service.errors import InvalidTransitionError
from hpo_service.services import leases, studies, suggestions, trials
from tests.builders import space

ME = Principal(key_id="k", role=Role.CLIENT, tenant="acme")


def make_study(db: Database, **kw) -> str:
    new = studies.NewStudy(
        name="s",
        objective=Objective(metric="val_loss"),
        space=SearchSpace.model_validate(space()),
        algorithm=kw.pop("algorithm", "random"),
        seed=kw.pop("seed", 1),
        **kw,
    )
    return studies.create_study(db, ME, new, default_max_attempts=3).id


def lease(db, sid, worker, count=1, now=None, lease_seconds=60.0):
    return suggestions.request_suggestions(
        db, ME, sid, worker_id=worker, count=count, now=now or utcnow(), lease_seconds=lease_seconds
    ).trials


def test_expired_lease_returns_trial_with_same_params(db: Database) -> None:
    sid = make_study(db)
    t0 = utcnow()
    first = lease(db, sid, "dead-worker", now=t0, lease_seconds=10)[0]
    # Still leased before expiry: another worker gets a new trial.
    other = lease(db, sid, "w2", now=t0 + timedelta(seconds=5))[0]
    assert other.id != first.id
    later = t0 + timedelta(seconds=11)
    again = lease(db, sid, "w3", now=later)[0]
    assert again.id == first.id
    assert again.params == first.params
    assert again.attempt == 2
    assert again.worker_id == "w3"


def test_attempts_run_out_into_failed(db: Database) -> None:
    sid = make_study(db, max_attempts=2, max_trials=1)
    t = utcnow()
    first = lease(db, sid, "a", now=t, lease_seconds=1)[0]
    lease(db, sid, "b", now=t + timedelta(seconds=2), lease_seconds=1)
    assert lease(db, sid, "c", now=t + timedelta(seconds=4), lease_seconds=1) == []
    got = trials.get_trial(db, ME, first.id)
    assert got.state is TrialState.FAILED
    assert "lease expired" in (got.error or "")
    assert got.attempt == 2


def test_heartbeat_and_measurement_extend_the_lease(db: Database) -> None:
    sid = make_study(db)
    t0 = utcnow()
    t = lease(db, sid, "w", now=t0, lease_seconds=10)[0]
    hb = trials.heartbeat(
        db, ME, t.id, worker_id="w", now=t0 + timedelta(seconds=8), lease_seconds=10
    )
    assert hb.lease_expires_at == t0 + timedelta(seconds=18)
    trials.report_measurement(
        db,
        ME,
        t.id,
        worker_id="w",
        step=1,
        metrics={"val_loss": 1.0},
        elapsed_s=None,
        now=t0 + timedelta(seconds=16),
        lease_seconds=10,
    )
    # Not expired at t0+20 thanks to the measurement: w2 gets a new trial.
    assert lease(db, sid, "w2", now=t0 + timedelta(seconds=20))[0].id != t.id
    assert trials.get_trial(db, ME, t.id).worker_id == "w"


def test_housekeeper_reclaims_all_studies(db: Database) -> None:
    a, b = make_study(db), make_study(db)
    lease(db, a, "w", lease_seconds=0.001)
    lease(db, b, "w", count=2, lease_seconds=0.001)
    import time

    time.sleep(0.01)
    keeper = Housekeeper(db, Settings(database_url=db.url))
    assert keeper.tick() == 3
    assert keeper.tick() == 0
    counts = studies.get_study(db, ME, b).trial_counts
    assert counts["requested"] == 2
    assert counts["active"] == 0


@pytest.mark.committed  # sixteen threads race for the study's lock
def test_concurrent_leasing_never_double_leases(db: Database) -> None:
    sid = make_study(db, max_trials=10, algorithm="sobol")
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results.append([t.id for t in lease(db, sid, f"w{i}")])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    leased = [tid for r in results for tid in r]
    assert len(leased) == 10
    assert len(set(leased)) == 10
    assert sum(1 for r in results if not r) == 6
    page = trials.list_trials(db, ME, sid, page_size=100)
    assert sorted(t.number for t in page.items) == list(range(10))
    assert len({tuple(sorted(t.params.items())) for t in page.items}) == 10


def test_same_seed_same_history_same_suggestions(db: Database) -> None:
    a = make_study(db, seed=42, algorithm="sobol")
    b = make_study(db, seed=42, algorithm="sobol")
    pa = [t.params for t in lease(db, a, "w", count=3)]
    pb = [t.params for t in lease(db, b, "w", count=3)]
    assert pa == pb
    c = make_study(db, seed=43, algorithm="sobol")
    assert [t.params for t in lease(db, c, "w", count=3)] != pa


def test_rejected_completion_changes_nothing(db: Database) -> None:
    sid = make_study(db)
    t = lease(db, sid, "w")[0]
    import pytest

    from hpo_service.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        trials.complete_trial(
            db, ME, t.id, worker_id="w", metrics={"acc": 1.0}, cost=None, now=utcnow()
        )
    stored = trials.get_trial(db, ME, t.id)
    assert stored.state is TrialState.ACTIVE
    assert stored.result is None


@pytest.mark.committed  # a second connection holds the row lock
def test_housekeeping_skips_a_busy_study_instead_of_waiting(db: Database) -> None:
    """A study row another transaction holds is left for later; the others are reclaimed.

    Waiting would risk a lock cycle: that transaction (a suggestion request) may itself
    be waiting for a trial row. PostgreSQL only: SQLite serialises every write anyway.
    """
    if db.engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's")
    busy, free = make_study(db), make_study(db)
    t0 = utcnow()
    lease(db, busy, "w", now=t0, lease_seconds=1)
    lease(db, free, "w", now=t0, lease_seconds=1)
    later = t0 + timedelta(seconds=5)
    with db.engine.connect() as holder:
        holder.execute(text("SELECT id FROM studies WHERE id = :i FOR UPDATE"), {"i": busy})
        done: list[int] = []
        keeper = threading.Thread(target=lambda: done.append(leases.reclaim_expired(db, later)))
        keeper.start()
        keeper.join(timeout=10)
        assert done == [1], "housekeeping waited for the busy study"
        holder.rollback()
    assert studies.get_study(db, ME, free).trial_counts["requested"] == 1
    assert studies.get_study(db, ME, busy).trial_counts["active"] == 1
    assert leases.reclaim_expired(db, later) == 1  # the next round gets it


def _in_write(db: Database, trial_id: str, move: Callable[[TrialRow], None]) -> None:
    """Apply ``move`` to the stored row in a write transaction (rolled back if it raises)."""
    with db.write() as session:
        row = session.get(TrialRow, trial_id)
        assert row is not None
        move(row)


def test_lease_bookkeeping_refuses_moves_the_table_lacks(db: Database) -> None:
    """``grant`` and ``requeue_or_fail`` go through the domain's table, whoever calls them."""
    sid = make_study(db)
    t = lease(db, sid, "w")[0]
    trials.complete_trial(
        db, ME, t.id, worker_id="w", metrics={"val_loss": 1.0}, cost=None, now=utcnow()
    )
    moves: list[Callable[[TrialRow], None]] = [
        lambda row: leases.grant(row, "w2", utcnow(), 60.0),
        lambda row: leases.requeue_or_fail(row, 3, utcnow(), "expired"),
    ]
    for move in moves:
        with pytest.raises(InvalidTransitionError):
            _in_write(db, t.id, move)
        stored = trials.get_trial(db, ME, t.id)
        assert (stored.state, stored.worker_id, stored.attempt) == (TrialState.COMPLETED, "w", 1)
    queued = trials.add_trials(db, ME, sid, [trials.NewTrial(params=t.params)], now=utcnow())[0]
    with pytest.raises(InvalidTransitionError):
        _in_write(db, queued.id, lambda row: leases.requeue_or_fail(row, 3, utcnow(), "queued"))
    assert trials.get_trial(db, ME, queued.id).state is TrialState.REQUESTED


class _SlowDesigner:
    """Random points, after a pause longer than the lease the test grants."""

    def __init__(self, config, seed) -> None:
        from hpo_service.engine.random_search import RandomDesigner

        self.inner = RandomDesigner(config, seed)

    def update(self, completed, pending) -> None:
        self.inner.update(completed, pending)

    def suggest(self, count):
        import time

        time.sleep(1.5)
        return self.inner.suggest(count)


def test_a_lease_runs_from_when_the_trial_is_handed_out(db: Database) -> None:
    from hpo_service.engine import registry

    registry.register("slow-test", _SlowDesigner)
    sid = make_study(db, algorithm="slow-test")
    t0 = utcnow()
    trial = lease(db, sid, "w", now=t0, lease_seconds=1.0)[0]
    # The designer took 1.5 s: a lease counted from the request would have expired.
    assert trial.lease_expires_at is not None
    assert trial.lease_expires_at >= t0 + timedelta(seconds=2.4)
