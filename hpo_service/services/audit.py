"""The audit log: who created or revoked keys, exported or imported data, logged in.

Entries are written inside the transaction of the action they describe wherever the
action's service owns that transaction, so an action that rolls back leaves no entry and
a committed one always has its entry. Reading the log is an admin use case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hpo_service.db.database import Database
from hpo_service.db.models import AuditRow
from hpo_service.db.repositories import AuditRepository
from hpo_service.db.repositories.audit import AUDIT_NEWEST_FIRST
from hpo_service.domain import Principal, Role
from hpo_service.services.access import require_role
from hpo_service.services.pagination import Page, next_token, read_token

__all__ = ["AuditEntry", "list_entries", "record", "record_now"]


@dataclass(frozen=True)
class AuditEntry:
    """One logged action."""

    id: int
    at: datetime
    actor_key_id: str | None
    actor_tenant: str | None
    actor_role: str | None
    action: str
    target: str | None
    detail: dict[str, Any] = field(default_factory=dict)


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor_key_id=row.actor_key_id,
        actor_tenant=row.actor_tenant,
        actor_role=row.actor_role,
        action=row.action,
        target=row.target,
        detail=dict(row.detail or {}),
    )


def record(
    session: Session,
    actor: Principal | None,
    action: str,
    *,
    now: datetime,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an entry inside an open transaction (``actor`` None: the command line)."""
    AuditRepository(session).add(
        AuditRow(
            at=now,
            actor_key_id=actor.key_id if actor is not None else None,
            actor_tenant=actor.tenant if actor is not None else None,
            actor_role=actor.role.value if actor is not None else None,
            action=action,
            target=target,
            detail=dict(detail or {}),
        )
    )


def record_now(
    db: Database,
    actor: Principal | None,
    action: str,
    *,
    now: datetime,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an entry in its own transaction, for actions that commit elsewhere."""
    with db.write() as session:
        record(session, actor, action, now=now, target=target, detail=detail)


def list_entries(
    db: Database,
    principal: Principal,
    *,
    action: str | None = None,
    actor_key_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[AuditEntry]:
    """Entries newest first (admins only)."""
    require_role(principal, Role.ADMIN)
    after = read_token(page_token, AUDIT_NEWEST_FIRST)
    with db.read() as session:
        got = AuditRepository(session).page(
            action=action,
            actor_key_id=actor_key_id,
            since=since,
            until=until,
            after=after,
            limit=page_size,
        )
        items = [_entry(r) for r in got.rows]
    return Page(items, next_token(AUDIT_NEWEST_FIRST, got.next_key))
