"""Queries on the audit log. Append-only; flush, never commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from hpo_service.db.keyset import Key, Keyset, KeysetSlice
from hpo_service.db.models import AuditRow

__all__ = ["AUDIT_NEWEST_FIRST", "AuditRepository"]

# The id only grows, so it orders entries by time without a timestamp in the key.
AUDIT_NEWEST_FIRST = Keyset("audit", AuditRow.id, descending=True)


class AuditRepository:
    """Every query on the ``audit_log`` table."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: AuditRow) -> AuditRow:
        """Append one entry inside the caller's transaction."""
        self.session.add(row)
        self.session.flush()
        return row

    def page(
        self,
        *,
        action: str | None,
        actor_key_id: str | None,
        since: datetime | None,
        until: datetime | None,
        after: Key | None,
        limit: int,
    ) -> KeysetSlice[AuditRow]:
        """Up to ``limit`` entries newest first, after the key ``after``."""
        conditions: list[ColumnElement[bool]] = []
        if action is not None:
            conditions.append(AuditRow.action == action)
        if actor_key_id is not None:
            conditions.append(AuditRow.actor_key_id == actor_key_id)
        if since is not None:
            conditions.append(AuditRow.at >= since)
        if until is not None:
            conditions.append(AuditRow.at < until)
        stmt = select(AuditRow).where(*conditions)
        return AUDIT_NEWEST_FIRST.fetch_scalars(self.session, stmt, after=after, limit=limit)
