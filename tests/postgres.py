"""The test PostgreSQL server: whether it is there, and throwaway databases on it.

Every test that needs a database of its own (a whole test run, a migration round trip, a
server subprocess, an import target) takes it from ``fresh_postgres_database``, so the
naming, the driver and the forced drop live in one place. The server is
``HPO_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hpo_service.db.database import normalize_url

__all__ = ["PG_ADMIN_URL", "fresh_postgres_database", "postgres_available", "require_postgres"]

PG_ADMIN_URL = os.environ.get(
    "HPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_available() -> bool:
    """Whether the test server answers within a few seconds."""
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
def fresh_postgres_database(prefix: str = "hpo_test") -> Iterator[str]:
    """A new, empty database on the test server, as a URL; dropped on exit.

    Skips (or fails in CI) without the server. The drop closes the connections still open
    on the database first (a server subprocess killed mid-test leaves some), so a failing
    test never leaves databases behind.

    Args:
        prefix: starts the database's name, so a leftover one tells which test made it.
    """
    require_postgres()
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(normalize_url(PG_ADMIN_URL)).set(database=name)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
