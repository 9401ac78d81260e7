"""How database tests leave no trace: a rolled-back transaction, or deleting every row.

The default (``rolled_back``): the test gets a ``Database`` bound to one connection of the
session's database, inside a transaction that is rolled back when the test ends. Every
``write()``/``read()``/``write_connection()`` of the code under test becomes a SAVEPOINT on
that connection, so services still commit and roll back their own units of work, and
nothing a test commits outlives it. Nothing has to know which tables exist.

The fallback (``empty_tables``), for tests marked ``committed``: their data must really be
committed because something outside the test's connection reads or writes it: another
``Database`` handle, a CLI command or server on the same URL, a browser against a live
server, or threads racing for row locks (one connection would serialise them and test
nothing). They run on the shared database itself, and every table the models define is
emptied afterwards, children first; the list comes from the metadata, so a new table is
covered without anyone remembering to add it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from hpo_service.db.database import Database
from hpo_service.db.models import Base, KeySecretCheckRow

__all__ = ["RollbackDatabase", "empty_tables", "rolled_back"]

# Kept between tests: the database's tie to its key-hash secret is recorded once per
# database, like its schema revision; deleting it would only make the next start record it.
_KEPT = frozenset({KeySecretCheckRow.__tablename__})


class RollbackDatabase(Database):
    """A ``Database`` whose transactions are savepoints of one outer transaction.

    Writes are serialised by a re-entrant lock: a connection is used by one thread at a
    time, and the app under test runs requests and background work on other threads than
    the test's. Reads are not: a streamed response reads its chunks on several threads in
    turn, and a lock must be released by the thread that took it. Tests whose reads race
    other threads' writes are ``committed`` tests.
    """

    def __init__(self, base: Database, connection: Connection) -> None:
        """Wrap ``base``'s database, bound to ``connection`` (a transaction already begun)."""
        super().__init__(base.url)
        self.engine.dispose()
        self.engine = base.engine  # engine events (statement counters) still see every query
        self._connection = connection
        self._savepoints = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A savepoint: released on success, rolled back on any error."""
        with self._lock, self._savepoints() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """``write()`` without an ORM session: a savepoint on the shared connection.

        The savepoint is plain SQL, unknown to SQLAlchemy: a ``Session(bind=conn)`` of the
        code under test must join the transaction as it does in production. Had SQLAlchemy
        begun the savepoint, that session would make a savepoint of its own and roll it
        back on close, losing what it flushed.
        """
        with self._lock:
            self._depth += 1
            name = f"test_write_{self._depth}"
            conn = self._connection
            conn.exec_driver_sql(f"SAVEPOINT {name}")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
                raise
            finally:
                conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
                self._depth -= 1

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A savepoint that is rolled back at the end (reads change nothing anyway)."""
        with self._savepoints() as session:
            yield session

    def dispose(self) -> None:
        """Nothing: the connection belongs to ``rolled_back``, the engine to the session."""


@contextmanager
def rolled_back(base: Database) -> Iterator[Database]:
    """A ``RollbackDatabase`` on ``base`` whose every change is undone on exit."""
    with base.engine.connect() as connection:
        outer = connection.begin()
        try:
            yield RollbackDatabase(base, connection)
        finally:
            outer.rollback()


def empty_tables(db: Database) -> None:
    """Delete every row of every table the models define, children before parents."""
    with db.write() as session:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in _KEPT:
                session.execute(table.delete())
