"""Engines and transactions for SQLite and PostgreSQL.

Concurrency lives in the transaction mode, not in callers:

- SQLite allows one writer. Write transactions start with ``BEGIN IMMEDIATE`` (the write
  lock is taken up front, so two writers never deadlock upgrading read locks) and, inside
  one process, queue on a lock instead of spinning in SQLite's busy handler. WAL lets
  readers proceed meanwhile; a busy timeout covers other processes.
- PostgreSQL runs at READ COMMITTED; services take row locks (``FOR UPDATE``) where a
  read decides a write.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hpo_service.db.idle_ping import ping_when_idle
from hpo_service.db.key_secret import key_secret_path, load_or_create_key_secret
from hpo_service.db.key_secret_check import (
    KeySecretMismatchError,
    mismatch_message,
    record_or_compare,
)

__all__ = ["Database", "normalize_url"]

_PING_AFTER_IDLE_SECONDS = 2.0


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs that name no driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class Database:
    """One engine plus the two kinds of transaction the services use.

    It also carries the secret API-key hashes in this database are keyed with
    (``key_secret``), because the two belong together: a key hash is only checkable with
    the secret it was made with.
    """

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int = 30_000,
        pool_size: int = 20,
        key_secret: str | None = None,
    ) -> None:
        """Open (lazily) the database at ``url``.

        Args:
            key_secret: the configured ``HPO_KEY_HASH_SECRET``; when None, the secret is
                generated once and kept in a file (see ``hpo_service.db.key_secret``),
                read on first use.
        """
        self.url = normalize_url(url)
        self.is_sqlite = make_url(self.url).get_backend_name() == "sqlite"
        self.engine = self._make_engine(busy_timeout_ms, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._key_secret = key_secret.encode() if key_secret else None
        self._secret_configured = bool(key_secret)
        self._secret_verified = False

    @property
    def key_secret(self) -> bytes:
        """The HMAC key of the API-key hashes stored in this database."""
        if self._key_secret is None:
            self._key_secret = load_or_create_key_secret(self.url)
        return self._key_secret

    def key_secret_matches(self) -> bool:
        """Whether ``key_secret`` is the one this database's keys were hashed with.

        The first call on a database without a check value records ours (see
        ``hpo_service.db.key_secret_check``). A match is remembered; a mismatch is asked
        again, so restoring the right secret file needs no restart of a checker.
        """
        if self._secret_verified:
            return True
        for attempt in range(3):
            try:
                with self.write() as session:
                    self._secret_verified = record_or_compare(session, self.key_secret)
                break
            except IntegrityError:  # a concurrent first start inserted the row: compare
                if attempt == 2:
                    raise
        return self._secret_verified

    def verify_key_secret(self) -> None:
        """Refuse to go on with a key-hash secret that cannot verify this database's keys.

        Servers and CLI commands that handle keys call this right after migrating.

        Raises:
            KeySecretMismatchError: with a message saying how to restore the secret.
        """
        if not self.key_secret_matches():
            raise KeySecretMismatchError(
                mismatch_message(
                    make_url(self.url).render_as_string(hide_password=True),
                    configured=self._secret_configured,
                    secret_file=None if self._secret_configured else key_secret_path(self.url),
                )
            )

    def _make_engine(self, busy_timeout_ms: int, pool_size: int) -> Engine:
        if not self.is_sqlite:
            pg = create_engine(self.url, pool_size=pool_size, max_overflow=pool_size)
            ping_when_idle(pg, _PING_AFTER_IDLE_SECONDS)  # not pool_pre_ping: see idle_ping
            return pg
        # Pooled connections: opening one runs the pragmas below, and closing the last
        # connection to a WAL database checkpoints it; both cost more than a small write.
        engine = create_engine(
            self.url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=False,
        )

        @event.listens_for(engine, "connect")
        def _configure(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-write transaction: committed on success, rolled back on any error."""
        with self._write_lock or nullcontext(), self._sessions() as session:
            if self.is_sqlite:
                session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """``write()`` without an ORM session, for hot paths built on Core statements.

        Same locking and ``BEGIN IMMEDIATE`` as ``write()``; committed on success, rolled
        back on any error. A session for a rarer branch can join the transaction with
        ``Session(bind=conn)`` (it then neither commits nor rolls back on its own).
        Creating and committing a session cost about a tenth of a millisecond, as much as
        a heartbeat's own statement.
        """
        with self._write_lock or nullcontext(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction, closed (not committed) at the end.

        Closing detaches the loaded rows without expiring them, so callers may still read
        their attributes after the block.
        """
        with self._sessions() as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
