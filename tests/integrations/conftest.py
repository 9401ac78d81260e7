"""A live `hpo serve` per backend for the integration tests, and client keys for it.

The integrations reach the service over HTTP only, so they are tested against a real
server process (SQLite file, or a fresh PostgreSQL database), started once per session
and backend; every test makes its own studies on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# Optuna's reusable suites assert inside their own module: have pytest rewrite those
# asserts so a failure shows the values, as the suite's documentation asks.
pytest.register_assert_rewrite("optuna.testing.pytest_samplers")

from hpo_service.db.base import utcnow  # noqa: E402
from hpo_service.db.database import Database  # noqa: E402
from hpo_service.domain import Role  # noqa: E402
from hpo_service.services import api_keys  # noqa: E402
from tests.worker.conftest import Server, start_server  # noqa: E402


@dataclass(frozen=True)
class Service:
    """A running server and a ``client`` key of its default tenant."""

    server: Server
    backend: str
    key: str

    @property
    def url(self) -> str:
        return self.server.url


def client_key(server: Server) -> str:
    """A client-role key, stored straight in the server's database."""
    db = Database(server.database_url)
    try:
        return api_keys.create_key(
            db, role=Role.CLIENT, tenant="default", name="optuna", now=utcnow()
        ).key
    finally:
        db.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A server with the default 300 s lease, per backend."""
    server, close = start_server(
        tmp_path_factory.mktemp(f"optuna-{request.param}"), request.param, lease=300.0
    )
    try:
        yield Service(server, request.param, client_key(server))
    finally:
        close()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def short_lease_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A server whose leases expire after 2 s (reclaimed every 0.5 s), per backend."""
    server, close = start_server(
        tmp_path_factory.mktemp(f"optuna-short-{request.param}"), request.param, lease=2.0
    )
    try:
        yield Service(server, request.param, client_key(server))
    finally:
        close()
