"""The reliability servers get a PostgreSQL database of their own.

They run under a configured key-hash secret (``servers.KEY_SECRET``, as production
would), while the shared test database is tied to the generated one by the tests that
start apps on it; a server refuses a database tied to another secret, so sharing would
make these tests depend on which ran first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import fresh_postgres_database


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Overrides the shared ``pg_url`` for this directory: a database only servers here use."""
    with fresh_postgres_database() as url:
        yield url
