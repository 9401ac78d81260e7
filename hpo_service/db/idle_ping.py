"""Check a pooled PostgreSQL connection before use only when it sat idle for a while.

SQLAlchemy's ``pool_pre_ping`` sends ``SELECT 1`` on every checkout. That catches
connections the server closed while they sat in the pool (a restart, an idle timeout in
a proxy or firewall), but on a busy server it is one more round trip per transaction:
measured on a heartbeat, about a sixth of the client's CPU and a fifth of PostgreSQL's.
A connection that finished a transaction milliseconds ago is alive; the ones worth
checking are those idle for longer than ``after_seconds``.

What a busy pool gives up: after a database restart, a request whose connection was used
just before the restart fails once with the same 503 (``Retry-After``) that requests
during the outage get. Its disconnect error makes SQLAlchemy replace every pooled
connection, so the requests after it run on fresh connections.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import InvalidatePoolError

__all__ = ["ping_when_idle"]

_IDLE_SINCE = "hpo_idle_since"


def ping_when_idle(engine: Engine, after_seconds: float) -> None:
    """Ping connections idle for ``after_seconds`` or longer when they are checked out.

    A failed ping invalidates the whole pool and the checkout is retried on a new
    connection, as with ``pool_pre_ping``; if none can be opened the caller gets the
    connection error (a 503 in the API).
    """

    @event.listens_for(engine, "checkin")
    def _note_idle(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < after_seconds:
            return  # new (just opened) or recently used
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # any failure: treat the connection as gone
            raise InvalidatePoolError(f"idle connection failed its ping: {exc}") from exc
