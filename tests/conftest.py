"""Shared fixtures: a migrated database per backend, an app, and keys for three roles.

Every test that takes ``db`` (directly or through ``app``/``client``) runs twice: on
SQLite (a temporary file) and on PostgreSQL (a fresh database created for this run on the
server at ``HPO_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``).
Without PostgreSQL the second run is skipped, unless ``CI`` is set, where it fails.

Each test runs inside a transaction that is rolled back when it ends; tests marked
``committed`` (other connections or processes read their data) commit for real and have
every table emptied afterwards. ``tests/isolation.py`` says how and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hpo_service.api.app import create_app
from hpo_service.client import HPOClient
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.migrate import upgrade_to_head
from hpo_service.domain import Role
from hpo_service.services import api_keys
from tests.isolation import empty_tables, rolled_back
from tests.postgres import PG_ADMIN_URL, fresh_postgres_database, require_postgres

__all__ = ["PG_ADMIN_URL", "Keys", "fresh_postgres_database", "require_postgres"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "committed: the test's data is read outside its connection (another Database, "
        "a CLI or server on the same URL, racing threads); commit for real, empty the "
        "tables afterwards",
    )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    with fresh_postgres_database() as url:
        yield url


def _sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "hpo.db"
    return f"sqlite:///{path}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return _sqlite_url(tmp_path_factory)


@pytest.fixture(scope="session")
def migrated_db(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    upgrade_to_head(db.engine)
    yield db
    db.dispose()


@pytest.fixture
def db(request: pytest.FixtureRequest, migrated_db: Database) -> Iterator[Database]:
    """The test's database: rolled back at the end, or emptied for ``committed`` tests."""
    if request.node.get_closest_marker("committed") is None:
        with rolled_back(migrated_db) as scoped:
            yield scoped
        return
    yield migrated_db
    empty_tables(migrated_db)


@pytest.fixture
def settings(db: Database) -> Settings:
    return Settings(database_url=db.url, lease_seconds=300, reclaim_interval_seconds=3600)


@pytest.fixture
def app_client(settings: Settings, db: Database) -> Iterator[TestClient]:
    app = create_app(settings, db=db)
    with TestClient(app, raise_server_exceptions=False) as tc:
        yield tc


@dataclass(frozen=True)
class Keys:
    admin: str
    client: str
    worker: str
    other_client: str
    other_worker: str


@pytest.fixture
def keys(db: Database) -> Keys:
    now = utcnow()

    def make(role: Role, tenant: str) -> str:
        return api_keys.create_key(
            db, role=role, tenant=tenant, name=f"{role}-{tenant}", now=now
        ).key

    return Keys(
        admin=make(Role.ADMIN, "ops"),
        client=make(Role.CLIENT, "acme"),
        worker=make(Role.WORKER, "acme"),
        other_client=make(Role.CLIENT, "globex"),
        other_worker=make(Role.WORKER, "globex"),
    )


@pytest.fixture
def client(app_client: TestClient, keys: Keys) -> HPOClient:
    """A client-role SDK for tenant acme, over the in-process app."""
    return HPOClient(api_key=keys.client, http=app_client)


@pytest.fixture
def worker(app_client: TestClient, keys: Keys) -> HPOClient:
    """A worker-role SDK for tenant acme."""
    return HPOClient(api_key=keys.worker, http=app_client)


@pytest.fixture
def admin(app_client: TestClient, keys: Keys) -> HPOClient:
    return HPOClient(api_key=keys.admin, http=app_client)


@pytest.fixture
def outsider(app_client: TestClient, keys: Keys) -> HPOClient:
    """A client of another tenant (globex)."""
    return HPOClient(api_key=keys.other_client, http=app_client)
