"""Alembic environment: migrate the connection we are handed, or the configured URL.

The same file runs from ``migrations/`` in a checkout and from ``hpo_service/migrations``
in an installed wheel, so it imports the package only, never anything beside itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from hpo_service.config import Settings
from hpo_service.db.database import Database
from hpo_service.db.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    database = Database(Settings().database_url)
    try:
        with database.engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        database.dispose()


if context.is_offline_mode():
    context.configure(url=Settings().database_url, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
