"""The test isolation itself: rolled back means gone, and emptied means every table."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from hpo_service.client import HPOClient
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.models import ApiKeyRow, Base, MeasurementRow, StudyRow, TrialRow
from hpo_service.domain import Role
from hpo_service.services import api_keys
from tests.builders import study
from tests.isolation import empty_tables, rolled_back


def _keys(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)


def test_what_a_test_commits_is_gone_after_it(migrated_db: Database) -> None:
    before = _keys(migrated_db)
    with rolled_back(migrated_db) as db:
        api_keys.create_key(db, role=Role.ADMIN, tenant="t", now=utcnow())
        assert _keys(db) == before + 1  # committed, as far as the code under test knows
    assert _keys(migrated_db) == before


def test_a_failed_unit_of_work_rolls_back_alone(migrated_db: Database) -> None:
    with rolled_back(migrated_db) as db:
        kept = api_keys.create_key(db, role=Role.ADMIN, tenant="t", now=utcnow())
        copy = {**_columns(db, kept.id), "id": "ak_other"}

        def fail_after_writing() -> None:
            with db.write() as session:
                session.add(ApiKeyRow(**copy))
                session.flush()
                raise RuntimeError("the service fails after writing")

        with pytest.raises(RuntimeError):
            fail_after_writing()
        with db.read() as session:
            assert session.scalars(select(ApiKeyRow.id)).all() == [kept.id]


def _columns(db: Database, key_id: str) -> dict[str, object]:
    with db.read() as session:
        row = session.get(ApiKeyRow, key_id)
        assert row is not None
        return {c.key: getattr(row, c.key) for c in ApiKeyRow.__table__.columns}


@pytest.mark.committed
def test_emptying_covers_every_table_the_models_define(
    db: Database, client: HPOClient, worker: HPOClient
) -> None:
    sid = client.create_study(study())["id"]
    (trial,) = worker.suggest(sid, "w", 1)["trials"]
    worker.report(trial["id"], "w", 1, {"val_loss": 1.0})
    with db.read() as session:
        assert all(
            session.scalar(select(func.count()).select_from(row.__table__))
            for row in (ApiKeyRow, StudyRow, TrialRow, MeasurementRow)
        )
    empty_tables(db)
    with db.read() as session:
        for table in Base.metadata.sorted_tables:
            if table.name != "key_secret_check":
                count = session.scalar(select(func.count()).select_from(table))
                assert count == 0, table.name
