"""Pooled PostgreSQL connections are pinged only after sitting idle (``db.idle_ping``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from hpo_service.db.idle_ping import ping_when_idle

IDLE = 0.3


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    """One pooled connection, so every checkout reuses it until it is replaced."""
    eng = create_engine(pg_url, pool_size=1, max_overflow=0)
    ping_when_idle(eng, IDLE)
    yield eng
    eng.dispose()


@pytest.fixture
def pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the dialect's pings (the real ping still runs)."""
    calls: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        calls.append(1)
        return real(dbapi_conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return calls


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill(pg_url: str, pid: int) -> None:
    killer = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with killer.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    killer.dispose()


def test_busy_connection_is_not_pinged(engine: Engine, pings: list[int]) -> None:
    first = _backend_pid(engine)
    for _ in range(5):
        assert _backend_pid(engine) == first
    assert pings == []


def test_idle_connection_is_pinged_and_replaced_when_dead(
    engine: Engine, pings: list[int], pg_url: str
) -> None:
    first = _backend_pid(engine)
    time.sleep(IDLE * 1.5)
    assert _backend_pid(engine) == first  # idle, pinged, alive: kept
    assert len(pings) == 1
    _kill(pg_url, first)
    time.sleep(IDLE * 1.5)
    second = _backend_pid(engine)  # the ping fails; the checkout reconnects
    assert second != first
    assert len(pings) == 2


def test_dead_busy_connection_fails_once_then_the_pool_recovers(
    engine: Engine, pings: list[int], pg_url: str
) -> None:
    """The price of skipping the ping: the first use after the kill fails."""
    first = _backend_pid(engine)
    _kill(pg_url, first)
    with pytest.raises(OperationalError):
        _backend_pid(engine)
    assert _backend_pid(engine) != first
    assert pings == []
