"""The baseline of bench_load: a bare FastAPI + SQLAlchemy endpoint doing one ORM insert.

Run by bench_load.py under uvicorn with the same database, process count and client load
as the service, so report/heartbeat throughput and latency are compared as ratios.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy import DateTime, Float, Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import NullPool


class Base(DeclarativeBase):
    pass


class EventRow(Base):
    __tablename__ = "bare_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    worker_id: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def create() -> FastAPI:
    url = os.environ["BARE_DATABASE_URL"]
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, poolclass=NullPool
        )
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    else:
        engine = create_engine(url, pool_size=20, max_overflow=20)
    Base.metadata.create_all(engine)
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
