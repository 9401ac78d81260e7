from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from hpo_service.db.database import Database
from hpo_service.db.migrate import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    migrations_dir,
    upgrade_to_head,
)
from hpo_service.db.models import Base
from tests.postgres import fresh_postgres_database

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "api_keys",
    "key_secret_check",
    "studies",
    "trials",
    "measurements",
    "idempotency_keys",
    "audit_log",
    "alembic_version",
}


def _check_roundtrip(url: str) -> None:
    db = Database(url)
    try:
        assert current_revision(db.engine) is None
        upgrade_to_head(db.engine)
        assert current_revision(db.engine) == head_revision()
        assert set(inspect(db.engine).get_table_names()) == EXPECTED
        indexes = {i["name"] for i in inspect(db.engine).get_indexes("trials")}
        assert {"ix_trials_study_state", "ix_trials_state_created", "ix_trials_created"} <= indexes
        assert "ix_trials_state_lease" not in indexes  # 0003: lease updates stay HOT
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
        upgrade_to_head(db.engine)  # idempotent
        downgrade(db.engine, "base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade_to_head(db.engine)
        assert current_revision(db.engine) == head_revision()
    finally:
        db.dispose()


def test_sqlite_upgrade_downgrade_upgrade(tmp_path) -> None:
    _check_roundtrip(f"sqlite:///{tmp_path / 'm.db'}")


def test_a_checkout_migrates_with_the_root_scripts() -> None:
    # The editable install also leaves a copy under site-packages/hpo_service/migrations;
    # a new migration must be picked up from migrations/ without reinstalling.
    assert migrations_dir() == ROOT / "migrations"
    assert alembic_config().get_main_option("script_location") == str(ROOT / "migrations")
    assert not (ROOT / "hpo_service" / "migrations").exists()


def test_the_alembic_command_migrates_the_environment_url(tmp_path, monkeypatch) -> None:
    # `alembic -c alembic.ini upgrade head` in a checkout: no connection is handed in, so
    # env.py opens HPO_DATABASE_URL itself and must commit what it ran.
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("HPO_DATABASE_URL", url)
    config = Config(str(ROOT / "alembic.ini"))
    assert config.get_main_option("script_location") == str(migrations_dir())
    command.upgrade(config, "head")
    db = Database(url)
    try:
        assert current_revision(db.engine) == head_revision()
        assert set(inspect(db.engine).get_table_names()) == EXPECTED
    finally:
        db.dispose()


@pytest.mark.postgres
def test_postgres_upgrade_downgrade_upgrade() -> None:
    with fresh_postgres_database("hpo_mig") as url:
        _check_roundtrip(url)
