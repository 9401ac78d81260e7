"""History pages stay index scans at scale (PostgreSQL plan) and cost a fixed statement count."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text

from hpo_service.db.database import Database
from hpo_service.db.migrate import upgrade_to_head
from hpo_service.db.models import StudyRow, TrialRow
from hpo_service.db.repositories import AdminRepository, TrialFilter
from hpo_service.domain import Principal, Role
from hpo_service.services.history import list_trials
from tests.admin.conftest import History

ADMIN = Principal(key_id="key_test", role=Role.ADMIN, tenant="ops")
STATES = ["completed", "completed", "completed", "failed", "requested", "active"]


def seed(db: Database, studies: int, per_study: int) -> list[str]:
    """Bulk-insert trials straight into the tables (the API would take minutes)."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    study_ids = [f"st_{secrets.token_hex(12)}" for _ in range(studies)]
    with db.write() as session:
        session.execute(
            insert(StudyRow),
            [
                {
                    "id": sid,
                    "tenant": f"t{i % 4}",
                    "name": f"s{i}",
                    "family": f"f{i % 3}",
                    "objective": {"metric": "loss", "goal": "minimize"},
                    "space": {"parameters": []},
                    "algorithm": "random",
                    "max_attempts": 3,
                    "meta": {},
                    "state": "active",
                    "next_number": per_study,
                    "created_at": t0,
                    "updated_at": t0,
                }
                for i, sid in enumerate(study_ids)
            ],
        )
        n = 0
        for sid in study_ids:
            rows = []
            for k in range(per_study):
                state = STATES[n % len(STATES)]
                created = t0 + timedelta(seconds=n)
                rows.append(
                    {
                        "id": f"tr_{secrets.token_hex(12)}",
                        "study_id": sid,
                        "number": k,
                        "params": {"x": k},
                        "state": state,
                        "source": "engine",
                        "worker_id": f"w{n % 50}" if state != "requested" else None,
                        "attempt": 1,
                        "value": float(k) if state == "completed" else None,
                        "meta": {},
                        "created_at": created,
                        "started_at": created,
                        "finished_at": created + timedelta(seconds=30)
                        if state in ("completed", "failed")
                        else None,
                    }
                )
                n += 1
            session.execute(insert(TrialRow), rows)
    return study_ids


@pytest.fixture
def big_pg(pg_url: str) -> Iterator[tuple[Database, list[str]]]:
    db = Database(pg_url)
    upgrade_to_head(db.engine)
    study_ids = seed(db, studies=20, per_study=500)
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("ANALYZE trials; ANALYZE studies")
        )
    yield db, study_ids
    with db.write() as session:
        session.execute(text("DELETE FROM trials"))
        session.execute(text("DELETE FROM studies"))
    db.dispose()


def explain(db: Database, stmt: Any) -> str:
    compiled = stmt.compile(dialect=db.engine.dialect)
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params).all()
    return "\n".join(r[0] for r in rows)


@pytest.mark.postgres
def test_history_pages_use_indexes_not_seq_scans(big_pg: tuple[Database, list[str]]) -> None:
    db, study_ids = big_pg
    cursor = (datetime(2026, 1, 1, 5, tzinfo=UTC), "tr_" + "8" * 24)
    cases: list[tuple[TrialFilter, str, Any]] = [
        (TrialFilter(), "created_at", None),
        (TrialFilter(), "created_at", cursor),
        (TrialFilter(), "-created_at", cursor),
        (TrialFilter(state="failed"), "created_at", None),
        (TrialFilter(study_id=study_ids[7]), "-created_at", None),
        (TrialFilter(worker_id="w7"), "created_at", cursor),
        (TrialFilter(), "-finished_at", None),
        (TrialFilter(tenant="t1"), "created_at", cursor),
        (TrialFilter(since=cursor[0], until=cursor[0] + timedelta(hours=1)), "created_at", None),
    ]
    for flt, order_by, after in cases:
        with db.read() as session:
            stmt = AdminRepository(session).history_statement(
                flt, order_by=order_by, after=after, limit=51
            )
        plan = explain(db, stmt)
        print(f"--- {flt} {order_by} after={after is not None}\n{plan}")
        assert "Seq Scan on trials" not in plan, plan
        assert "Index Scan" in plan or "Index Only Scan" in plan, plan
        assert "ix_trials_" in plan, plan


def test_a_page_is_a_fixed_number_of_statements(db: Database, history: History) -> None:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        for size in (1, 3, 50):
            statements.clear()
            page = list_trials(db, ADMIN, TrialFilter(), page_size=size)
            assert len(page.items) == min(size, 7)
            assert len(statements) == 2, statements  # the page, then all its measurements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
