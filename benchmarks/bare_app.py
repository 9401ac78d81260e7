"""The baseline of bench_load: a bare FastAPI + SQLAlchemy endpoint doing one ORM insert.

Run by bench_load.py with the same database, process count and client load as the
service, so report/heartbeat throughput and latency are compared as ratios. It gets the
same engine setup the service uses (pooled connections; SQLite in WAL mode with
``synchronous=NORMAL``) and the same uvicorn protocol (TCP_NODELAY, see
``hpo_service.api.serving``): the baseline must be the best a plain endpoint can do on
this machine, or the ratios flatter the service.

    BARE_DATABASE_URL=... python benchmarks/bare_app.py --port 8100 --workers 4
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import DateTime, Engine, Float, Integer, String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class EventRow(Base):
    __tablename__ = "bare_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    worker_id: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def make_engine(url: str) -> Engine:
    pool = int(os.environ.get("BARE_POOL_SIZE", "20"))  # same as the service's pool
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=pool, max_overflow=pool)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=pool
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def create() -> FastAPI:
    engine = make_engine(os.environ["BARE_DATABASE_URL"])
    sessions = sessionmaker(engine)
    app = FastAPI()

    @app.post("/insert")
    def insert(body: dict[str, float | str]) -> dict[str, bool]:
        with sessions() as session, session.begin():
            s: Session = session
            s.add(
                EventRow(
                    worker_id=str(body.get("worker_id", "w")),
                    value=float(body.get("value", 0.0)),
                    at=datetime.now(UTC),
                )
            )
        return {"ok": True}

    return app


def main() -> None:
    import uvicorn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hpo_service.api.serving import NoDelayHTTPProtocol

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    engine = make_engine(os.environ["BARE_DATABASE_URL"])
    Base.metadata.create_all(engine)  # once, before the workers start (no create race)
    engine.dispose()
    uvicorn.run(
        "bare_app:create",
        factory=True,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        http=NoDelayHTTPProtocol,
    )


if __name__ == "__main__":
    main()
