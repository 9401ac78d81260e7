"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from hpo_service.api.deps import DatabaseDep
from hpo_service.db.migrate import current_revision, head_revision
from hpo_service.errors import ServiceUnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (no dependency checked)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(db: DatabaseDep) -> dict[str, str]:
    """The database is reachable and its schema is at the code's head revision."""
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    current, head = current_revision(db.engine), head_revision()
    if current != head:
        raise ServiceUnavailableError(f"database schema is at {current}, code expects {head}")
    return {"status": "ready", "schema": str(current)}
