"""Queries on the audit log. Append-only; flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from hpo_service.db.models import AuditRow

__all__ = ["AuditRepository"]


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
        before_id: int | None,
        limit: int,
    ) -> Sequence[AuditRow]:
        """Entries newest first, keyset-paginated on ``id`` (it only grows)."""
        conditions: list[ColumnElement[bool]] = []
        if action is not None:
            conditions.append(AuditRow.action == action)
        if actor_key_id is not None:
            conditions.append(AuditRow.actor_key_id == actor_key_id)
        if since is not None:
            conditions.append(AuditRow.at >= since)
        if until is not None:
            conditions.append(AuditRow.at < until)
        if before_id is not None:
            conditions.append(AuditRow.id < before_id)
        stmt = select(AuditRow).where(*conditions).order_by(AuditRow.id.desc()).limit(limit)
        return self.session.scalars(stmt).all()
