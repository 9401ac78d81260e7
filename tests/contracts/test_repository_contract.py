"""The contract every repository keeps on both backends: create, get, list, page, lock.

Each test runs on SQLite and on PostgreSQL (the ``db`` fixture) and states the exact
result it expects, so both backends must give the same rows in the same order. Pages are
walked through a JSON round trip of their keys, as a page token carries them: a timestamp
or float that does not come back exactly would skip or repeat rows on one backend only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from hpo_service.db.database import Database
from hpo_service.db.ids import new_id
from hpo_service.db.keyset import Key, Keyset, KeysetSlice
from hpo_service.db.models import (
    ApiKeyRow,
    AuditRow,
    IdempotencyRow,
    MeasurementRow,
    StudyRow,
    TrialRow,
)
from hpo_service.db.repositories import (
    AdminRepository,
    ApiKeyRepository,
    AuditRepository,
    DumpRepository,
    ExportRepository,
    IdempotencyRepository,
    StudyRepository,
    TrialFilter,
    TrialRepository,
)
from hpo_service.db.repositories.admin import HISTORY_ORDERS
from hpo_service.db.repositories.api_keys import KEYS_BY_CREATION
from hpo_service.db.repositories.audit import AUDIT_NEWEST_FIRST
from hpo_service.db.repositories.studies import STUDIES_BY_CREATION
from hpo_service.db.repositories.trials import TRIALS_BY_NUMBER, trial_order

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _study(
    session: Session,
    *,
    tenant: str = "acme",
    family: str | None = None,
    state: str = "active",
    created: datetime = T0,
) -> StudyRow:
    row = StudyRow(
        id=new_id("st"),
        tenant=tenant,
        name="s",
        family=family,
        objective={"metric": "loss", "goal": "minimize"},
        space={"parameters": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}]},
        algorithm="random",
        max_attempts=3,
        state=state,
        created_at=created,
    )
    return StudyRepository(session).add(row)


def _trial(
    session: Session,
    study: StudyRow,
    number: int,
    *,
    state: str = "completed",
    value: float | None = None,
    worker: str | None = None,
    finished: datetime | None = None,
    result: dict[str, Any] | None = None,
) -> TrialRow:
    row = TrialRow(
        id=new_id("tr"),
        study_id=study.id,
        number=number,
        params={"x": number / 10},
        state=state,
        source="engine",
        value=value,
        worker_id=worker,
        result=result,
        created_at=T0 + timedelta(seconds=number),
        finished_at=finished,
    )
    return TrialRepository(session).add(row)


def _measure(session: Session, trial: TrialRow, step: int) -> None:
    session.add(MeasurementRow(trial_id=trial.id, step=step, metrics={"loss": float(step)}))
    session.flush()


def _walk(keyset: Keyset, fetch: Callable[[Key | None], KeysetSlice[Any]]) -> list[Any]:
    """Every row, page by page, each key passed through JSON as a page token carries it."""
    rows: list[Any] = []
    after: Key | None = None
    for _ in range(50):  # a cursor that does not advance would page forever
        page = fetch(after)
        rows.extend(page.rows)
        if page.next_key is None:
            return rows
        after = keyset.load(json.loads(json.dumps(keyset.dump(page.next_key))))
    raise AssertionError(f"no last page after 50 pages: {rows[:10]}")


# -- studies ---------------------------------------------------------------------------------


def test_a_study_is_found_by_id_within_its_tenant_only(db: Database) -> None:
    with db.write() as session:
        sid = _study(session).id
    with db.read() as session:
        repo = StudyRepository(session)
        found = repo.get(sid)
        assert found is not None
        assert found.id == sid
        assert found.created_at == T0
        assert repo.get(sid, tenant="acme") is not None
        assert repo.get(sid, tenant="globex") is None
        assert repo.get("st_" + "0" * 24) is None


def test_studies_page_in_creation_order_with_ties_broken_by_id(db: Database) -> None:
    with db.write() as session:
        same = [_study(session, created=T0).id for _ in range(3)]
        later = _study(session, created=T0 + timedelta(microseconds=1)).id
        earlier = _study(session, created=T0 - timedelta(days=1)).id
        _study(session, tenant="globex")
        _study(session, family="gpt", state="paused")
    with db.read() as session:
        repo = StudyRepository(session)

        def acme(after: Key | None) -> KeysetSlice[StudyRow]:
            return repo.page(
                tenant="acme", family=None, state="active", name=None, after=after, limit=2
            )

        walked = [r.id for r in _walk(STUDIES_BY_CREATION, acme)]
        assert walked == [earlier, *sorted(same), later]
        gpt = repo.page(tenant=None, family="gpt", state=None, name=None, after=None, limit=9)
        assert [r.state for r in gpt.rows] == ["paused"]
        assert gpt.next_key is None


def test_locking_a_study_returns_it_and_a_trial_leads_to_its_study(db: Database) -> None:
    with db.write() as session:
        study = _study(session)
        trial = _trial(session, study, 0)
        repo = StudyRepository(session)
        locked = repo.get(study.id, lock=True)
        assert locked is not None
        assert locked.id == study.id
        owner = repo.lock_of_trial(trial.id)
        assert owner is not None
        assert owner.id == study.id
        assert repo.lock_of_trial("tr_" + "0" * 24) is None


def test_trial_counts_group_by_state_and_deleting_a_study_takes_its_trials(
    db: Database,
) -> None:
    with db.write() as session:
        study, empty = _study(session), _study(session)
        done = _trial(session, study, 0)
        _trial(session, study, 1, state="active", worker="w")
        _trial(session, study, 2, state="active", worker="w")
        _measure(session, done, 1)
        counts = StudyRepository(session).trial_counts([study.id, empty.id])
        assert counts == {study.id: {"completed": 1, "active": 2}, empty.id: {}}
        StudyRepository(session).delete(study)
    with db.read() as session:
        assert TrialRepository(session).all_for_study(study.id) == []
        assert TrialRepository(session).measurements([done.id]) == {done.id: []}


# -- trials ----------------------------------------------------------------------------------


def test_trials_page_by_number_with_state_and_worker_filters(db: Database) -> None:
    with db.write() as session:
        study = _study(session)
        for n in range(7):
            _trial(session, study, n, state="active" if n % 2 else "completed", worker=f"w{n % 3}")
    with db.read() as session:
        repo = TrialRepository(session)

        def numbers(state: str | None, worker: str | None) -> list[int]:
            rows = _walk(
                TRIALS_BY_NUMBER,
                lambda after: repo.page(
                    study.id,
                    state=state,
                    worker_id=worker,
                    order=TRIALS_BY_NUMBER,
                    after=after,
                    limit=2,
                ),
            )
            return [r.number for r in rows]

        assert numbers(None, None) == list(range(7))
        assert numbers("active", None) == [1, 3, 5]
        assert numbers(None, "w0") == [0, 3, 6]


def test_trials_page_by_value_best_first_then_valueless_by_number(db: Database) -> None:
    values = [0.5, None, 0.25, 0.5, None, -1.0, 0.1 + 0.2]
    with db.write() as session:
        study = _study(session)
        for n, v in enumerate(values):
            _trial(session, study, n, value=v, state="completed" if v is not None else "active")
    with db.read() as session:
        repo = TrialRepository(session)

        def order(goal: str) -> list[int]:
            keyset = trial_order("value", goal)
            rows = _walk(
                keyset,
                lambda after: repo.page(
                    study.id, state=None, worker_id=None, order=keyset, after=after, limit=2
                ),
            )
            return [r.number for r in rows]

        assert order("minimize") == [5, 2, 6, 0, 3, 1, 4]
        assert order("maximize") == [0, 3, 6, 2, 5, 1, 4]


def test_measurements_come_grouped_per_trial_in_report_order(db: Database) -> None:
    with db.write() as session:
        study = _study(session)
        a, b, c = (_trial(session, study, n) for n in range(3))
        for step in (3, 1, 2):
            _measure(session, a, step)
        _measure(session, b, 7)
    with db.read() as session:
        got = TrialRepository(session).measurements([a.id, b.id, c.id])
        assert {tid: [m.step for m in ms] for tid, ms in got.items()} == {
            a.id: [3, 1, 2],
            b.id: [7],
            c.id: [],
        }


def test_a_lease_check_reads_owner_tenant_and_stopping(db: Database) -> None:
    with db.write() as session:
        plain = _study(session)
        stopping = _study(session, tenant="globex")
        stopping.stopping = {"rule": "median"}
        t1 = _trial(session, plain, 0, state="active", worker="w1")
        t2 = _trial(session, stopping, 0, state="active", worker="w2")
    with db.write() as session:
        repo = TrialRepository(session)
        one, two = repo.lease_check(t1.id), repo.lease_check(t2.id)
        assert one is not None
        assert two is not None
        assert (one.state, one.worker_id, one.tenant, one.has_stopping) == (
            "active",
            "w1",
            "acme",
            False,
        )
        assert (two.worker_id, two.tenant, two.has_stopping) == ("w2", "globex", True)
        assert repo.lease_check("tr_" + "0" * 24) is None


# -- API keys, audit, idempotency ------------------------------------------------------------


def _key(session: Session, tenant: str, created: datetime) -> str:
    row = ApiKeyRow(
        id=new_id("ak"),
        name="k",
        role="client",
        tenant=tenant,
        secret_hash="0" * 64,
        created_at=created,
    )
    return ApiKeyRepository(session).add(row).id


def test_keys_page_oldest_first_and_last_use_is_written_once_per_period(db: Database) -> None:
    with db.write() as session:
        ids = [_key(session, "acme", T0 + timedelta(minutes=i % 2)) for i in range(5)]
        other = _key(session, "globex", T0)
    expected = sorted(ids, key=lambda i: (ids.index(i) % 2, i))
    with db.write() as session:
        repo = ApiKeyRepository(session)
        walked = _walk(KEYS_BY_CREATION, lambda a: repo.page(tenant="acme", after=a, limit=2))
        assert [r.id for r in walked] == expected
        assert repo.count() == 6
        now = T0 + timedelta(hours=1)
        assert repo.touch(other, now, now - timedelta(minutes=1)) is True
        assert repo.touch(other, now, now - timedelta(minutes=1)) is False
        assert repo.touch(other, now, now + timedelta(seconds=1)) is True


def test_audit_entries_page_newest_first_with_filters(db: Database) -> None:
    with db.write() as session:
        repo = AuditRepository(session)
        for i in range(5):
            repo.add(AuditRow(at=T0 + timedelta(hours=i), action="export" if i % 2 else "import"))
    with db.read() as session:
        repo = AuditRepository(session)

        def entries(action: str | None, since: datetime | None) -> list[int]:
            rows = _walk(
                AUDIT_NEWEST_FIRST,
                lambda after: repo.page(
                    action=action,
                    actor_key_id=None,
                    since=since,
                    until=None,
                    after=after,
                    limit=2,
                ),
            )
            return [int((r.at - T0).total_seconds() // 3600) for r in rows]

        assert entries(None, None) == [4, 3, 2, 1, 0]
        assert entries("export", None) == [3, 1]
        assert entries(None, T0 + timedelta(hours=2)) == [4, 3, 2]


def test_idempotency_records_are_found_deleted_and_purged_by_age(db: Database) -> None:
    with db.write() as session:
        repo = IdempotencyRepository(session)
        for key, age in (("old", 2), ("new", 0)):
            repo.add(
                IdempotencyRow(
                    scope="s", key=key, request_digest="d", created_at=T0 - timedelta(days=age)
                )
            )
        assert repo.purge_before(T0 - timedelta(days=1)) == 1
        assert repo.get("s", "old") is None
        found = repo.get("s", "new")
        assert found is not None
        assert found.request_digest == "d"
        repo.delete("s", "new")
        assert repo.get("s", "new") is None


# -- cross-study reads: admin history, export, dump ------------------------------------------


def _two_studies(db: Database) -> tuple[StudyRow, StudyRow, list[TrialRow]]:
    with db.write() as session:
        a = _study(session, family="gpt")
        b = _study(session, tenant="globex")
        trials = [
            _trial(session, a, 0, finished=T0 + timedelta(hours=3), result={"metrics": {"x": 1}}),
            _trial(session, a, 1, state="active", worker="w1"),
            _trial(session, b, 0, finished=T0 + timedelta(hours=1), result={"metrics": {"y": 2}}),
            _trial(session, b, 1, finished=T0 + timedelta(hours=2)),
        ]
        _measure(session, trials[0], 1)
    return a, b, trials


def test_history_orders_and_filters_across_studies(db: Database) -> None:
    a, _b, t = _two_studies(db)
    with db.read() as session:
        repo = AdminRepository(session)

        def history(order: Any, flt: TrialFilter) -> list[str]:
            rows = _walk(
                HISTORY_ORDERS[order],
                lambda after: repo.history(flt, order_by=order, after=after, limit=1),
            )
            return [r.trial.id for r in rows]

        by_created = sorted(t, key=lambda r: (r.created_at, r.id))
        assert history("created_at", TrialFilter()) == [r.id for r in by_created]
        assert history("-created_at", TrialFilter()) == [r.id for r in reversed(by_created)]
        assert history("finished_at", TrialFilter()) == [t[2].id, t[3].id, t[0].id]
        assert history("-finished_at", TrialFilter(tenant="globex")) == [t[3].id, t[2].id]
        assert history("created_at", TrialFilter(study_id=a.id, state="active")) == [t[1].id]
        assert repo.counts_by(TrialRow.state) == {"completed": 3, "active": 1}
        (leases,) = repo.worker_leases()
        assert (leases.tenant, leases.worker_id, leases.active) == ("acme", "w1", 1)


def test_export_streams_every_trial_by_study_and_number_in_chunks(db: Database) -> None:
    a, b, _t = _two_studies(db)
    with db.read() as session:
        repo = ExportRepository(session)
        chunks = list(repo.stream(TrialFilter(), chunk=3))
        assert [len(c) for c in chunks] == [3, 1]
        got = [(r.trial.study_id, r.trial.number, r.tenant) for c in chunks for r in c]
        expected = [(a.id, 0, "acme"), (a.id, 1, "acme"), (b.id, 0, "globex"), (b.id, 1, "globex")]
        assert got == sorted(expected)
        assert repo.result_keys(TrialFilter(), chunk=1) == {"x", "y"}
        assert repo.result_keys(TrialFilter(family="gpt"), chunk=1) == {"x"}
        assert [s.id for s in repo.studies(TrialFilter(tenant="globex"))] == [b.id]


def test_dump_reads_tables_and_one_studys_rows_and_inserts_them_back(db: Database) -> None:
    a, b, t = _two_studies(db)
    trials = cast(Table, TrialRow.__table__)
    measurements = cast(Table, MeasurementRow.__table__)
    with db.read() as session:
        repo = DumpRepository(session)
        every = [r._mapping["id"] for r in repo.rows(trials, chunk=2)]
        assert every == sorted(r.id for r in t)
        ours = [r._mapping["id"] for r in repo.rows(trials, study_id=b.id, chunk=2)]
        assert ours == sorted([t[2].id, t[3].id])
        assert len(list(repo.rows(measurements, study_id=a.id, chunk=2))) == 1
        assert list(repo.rows(measurements, study_id=b.id, chunk=2)) == []
        copied = {**dict(next(iter(repo.rows(trials, study_id=b.id, chunk=1)))._mapping)}
    with db.write() as session:
        repo = DumpRepository(session)
        assert repo.existing_ids(trials, [t[0].id, "tr_" + "1" * 24]) == {t[0].id}
        repo.insert(trials, [{**copied, "id": "tr_" + "1" * 24, "number": 9}])
        assert repo.existing_ids(trials, ["tr_" + "1" * 24]) == {"tr_" + "1" * 24}
