"""The worker hot path (heartbeat, measurement) on its prebuilt UPDATE ... RETURNING.

The fast path extends the lease before it knows whose trial it touched, so these tests
pin that every refusal leaves the stored trial exactly as it was (the transaction rolls
the update back) and answers like the full checks do.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.repositories.lease_writes import LeaseWrites
from hpo_service.domain import Principal, Role, Trial, TrialState
from hpo_service.errors import TrialNotFoundError, TrialNotLeasedError
from hpo_service.services import trials
from tests.services.test_leasing import ME, lease, make_study

OTHER_TENANT = Principal(key_id="k2", role=Role.WORKER, tenant="globex")
ADMIN = Principal(key_id="k3", role=Role.ADMIN, tenant="ops")


def _leased(db: Database) -> Trial:
    return lease(db, make_study(db), "w", lease_seconds=60)[0]


def _report(db: Database, who: Principal, trial_id: str, worker: str = "w") -> bool:
    return trials.report_measurement(
        db,
        who,
        trial_id,
        worker_id=worker,
        step=1,
        metrics={"val_loss": 0.5},
        elapsed_s=1.0,
        now=utcnow(),
        lease_seconds=600,
    )


def _heartbeat(db: Database, who: Principal, trial_id: str, worker: str = "w") -> None:
    trials.heartbeat(db, who, trial_id, worker_id=worker, now=utcnow(), lease_seconds=600)


def test_other_tenant_with_the_same_worker_id_gets_404_and_changes_nothing(
    db: Database,
) -> None:
    t = _leased(db)
    with pytest.raises(TrialNotFoundError):
        _heartbeat(db, OTHER_TENANT, t.id)
    with pytest.raises(TrialNotFoundError):
        _report(db, OTHER_TENANT, t.id)
    after = trials.get_trial(db, ME, t.id)
    assert after.lease_expires_at == t.lease_expires_at
    assert after.measurements == []


def test_admin_may_touch_any_tenant(db: Database) -> None:
    t = _leased(db)
    assert _report(db, ADMIN, t.id) is False
    after = trials.get_trial(db, ME, t.id)
    assert after.lease_expires_at is not None
    assert t.lease_expires_at is not None
    assert after.lease_expires_at > t.lease_expires_at
    assert [(m.step, m.metrics, m.elapsed_s) for m in after.measurements] == [
        (1, {"val_loss": 0.5}, 1.0)
    ]


def test_refusals_say_why_and_change_nothing(db: Database) -> None:
    t = _leased(db)
    with pytest.raises(TrialNotLeasedError, match="leased to another worker"):
        _heartbeat(db, ME, t.id, worker="intruder")
    with pytest.raises(TrialNotLeasedError, match="leased to another worker"):
        _report(db, ME, t.id, worker="intruder")
    for missing in ("tr_" + "0" * 24, "not-an-id"):
        with pytest.raises(TrialNotFoundError):
            _heartbeat(db, ME, missing)
        with pytest.raises(TrialNotFoundError):
            _report(db, ME, missing)
    after = trials.get_trial(db, ME, t.id)
    assert after.lease_expires_at == t.lease_expires_at
    assert after.measurements == []


def test_finished_trial_is_not_leased_any_more(db: Database) -> None:
    t = _leased(db)
    trials.complete_trial(
        db, ME, t.id, worker_id="w", metrics={"val_loss": 1.0}, cost=None, now=utcnow()
    )
    with pytest.raises(TrialNotLeasedError, match="is completed"):
        _heartbeat(db, ME, t.id)
    with pytest.raises(TrialNotLeasedError, match="is completed"):
        _report(db, ME, t.id)
    after = trials.get_trial(db, ME, t.id)
    assert after.state is TrialState.COMPLETED
    assert after.lease_expires_at is None
    assert after.measurements == []


def test_stopping_trial_keeps_its_lease_and_is_told_to_stop(db: Database) -> None:
    t = _leased(db)
    with db.write() as session:
        session.execute(text("UPDATE trials SET state = 'stopping' WHERE id = :i"), {"i": t.id})
    now = utcnow()
    hb = trials.heartbeat(db, ME, t.id, worker_id="w", now=now, lease_seconds=30)
    assert hb.should_stop is True
    assert hb.lease_expires_at == now + timedelta(seconds=30)
    assert _report(db, ME, t.id) is True
    after = trials.get_trial(db, ME, t.id)
    assert after.lease_expires_at is not None
    assert after.lease_expires_at > hb.lease_expires_at
    assert after.state is TrialState.STOPPING


def test_write_connection_rolls_back_on_error(db: Database) -> None:
    t = _leased(db)

    def fail_half_way() -> None:
        with db.write_connection() as conn:
            conn.execute(text("UPDATE trials SET state = 'failed' WHERE id = :i"), {"i": t.id})
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert trials.get_trial(db, ME, t.id).state is TrialState.ACTIVE
    with db.write_connection() as conn:
        conn.execute(text("UPDATE trials SET error = 'kept' WHERE id = :i"), {"i": t.id})
    assert trials.get_trial(db, ME, t.id).error == "kept"


def test_lease_that_changed_hands_concurrently_is_written_by_the_full_path(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UPDATE missed (as when the lease moved while it waited); the locked read finds
    the lease is the caller's, so the extension and the measurement are stored anyway."""
    t = _leased(db)
    monkeypatch.setattr(LeaseWrites, "touch", lambda *_a, **_k: None)
    assert _report(db, ME, t.id) is False
    _heartbeat(db, ME, t.id)
    after = trials.get_trial(db, ME, t.id)
    assert [m.step for m in after.measurements] == [1]
    assert after.lease_expires_at is not None
    assert t.lease_expires_at is not None
    assert after.lease_expires_at > t.lease_expires_at
