"""Shared fixtures: a migrated database per backend, an app, and keys for three roles.

Every test that takes ``db`` (directly or through ``app``/``client``) runs twice: on
SQLite (a temporary file) and on PostgreSQL (a fresh database created for this run on the
server at ``HPO_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``).
Without PostgreSQL the second run is skipped, unless ``CI`` is set, where it fails.
Tables are emptied after each test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hpo_service.api.app import create_app
from hpo_service.client import HPOClient
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database, normalize_url
from hpo_service.db.migrate import upgrade_to_head
from hpo_service.domain import Role
from hpo_service.services import api_keys

PG_ADMIN_URL = os.environ.get(
    "HPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TABLES = ["measurements", "trials", "studies", "api_keys", "idempotency_keys", "audit_log"]


def postgres_available() -> bool:
    try:
        engine = create_engine(normalize_url(PG_ADMIN_URL), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def require_postgres() -> None:
    """Skip (locally) or fail (in CI) when PostgreSQL is not reachable."""
    if postgres_available():
        return
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI but {PG_ADMIN_URL} is unreachable")
    pytest.skip("PostgreSQL not reachable")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server; dropped on exit."""
    require_postgres()
    name = f"hpo_test_{secrets.token_hex(6)}"
    admin = create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(normalize_url(PG_ADMIN_URL)).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


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
def db(migrated_db: Database) -> Iterator[Database]:
    yield migrated_db
    with migrated_db.write() as session:
        for table in TABLES:
            session.execute(text(f"DELETE FROM {table}"))


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
