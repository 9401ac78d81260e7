"""Queries on stored Idempotency-Key responses. Flush, never commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hpo_service.db.models import IdempotencyRow

__all__ = ["IdempotencyRepository"]


class IdempotencyRepository:
    """Every query on the ``idempotency_keys`` table."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, scope: str, key: str) -> IdempotencyRow | None:
        """The stored record for this caller and key."""
        stmt = select(IdempotencyRow).where(
            IdempotencyRow.scope == scope, IdempotencyRow.key == key
        )
        return self.session.scalars(stmt).one_or_none()

    def add(self, row: IdempotencyRow) -> None:
        """Insert a record; the primary key makes a concurrent duplicate fail."""
        self.session.add(row)
        self.session.flush()

    def delete(self, scope: str, key: str) -> None:
        """Forget a key (its request failed before producing a response)."""
        self.session.execute(
            delete(IdempotencyRow).where(IdempotencyRow.scope == scope, IdempotencyRow.key == key)
        )

    def purge_before(self, cutoff: datetime) -> int:
        """Drop records older than ``cutoff``; returns how many."""
        result = self.session.execute(
            delete(IdempotencyRow).where(IdempotencyRow.created_at < cutoff)
        )
        return int(getattr(result, "rowcount", 0) or 0)
