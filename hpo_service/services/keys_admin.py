"""API-key management for admins: issue, list and revoke keys, each change audited.

Issuing reuses ``api_keys.create_key`` (the secret is shown once, only its hash is
stored); every change is logged in the audit log in the transaction that makes it, or
right after it for issuing, which commits in ``api_keys``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hpo_service.db.database import Database
from hpo_service.db.models import ApiKeyRow
from hpo_service.db.repositories import ApiKeyRepository
from hpo_service.db.repositories.api_keys import KEYS_BY_CREATION
from hpo_service.domain import Principal, Role
from hpo_service.errors import ApiKeyNotFoundError, InvalidInputError
from hpo_service.services import api_keys, audit
from hpo_service.services.access import require_role
from hpo_service.services.pagination import Page, next_token, read_token

__all__ = ["KeyInfo", "create_key", "list_keys", "revoke_key"]


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed: everything but its secret (which is never stored)."""

    id: str
    name: str
    role: str
    tenant: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def _key_info(row: ApiKeyRow) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        role=row.role,
        tenant=row.tenant,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def create_key(
    db: Database,
    principal: Principal,
    *,
    role: Role,
    tenant: str,
    name: str,
    expires_at: datetime | None,
    now: datetime,
) -> api_keys.IssuedKey:
    """Issue a key (admins only); the returned secret is the only copy there will be."""
    require_role(principal, Role.ADMIN)
    if expires_at is not None and expires_at <= now:
        raise InvalidInputError.at(("body", "expires_at"), "expires_at must be in the future")
    issued = api_keys.create_key(
        db, role=role, tenant=tenant, name=name, expires_at=expires_at, now=now
    )
    detail: dict[str, Any] = {"role": role.value, "tenant": tenant, "name": name}
    if expires_at is not None:
        detail["expires_at"] = expires_at.isoformat()
    audit.record_now(db, principal, "key.create", now=now, target=issued.id, detail=detail)
    return issued


def list_keys(
    db: Database,
    principal: Principal,
    *,
    tenant: str | None = None,
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[KeyInfo]:
    """Every key (revoked ones too, so their history stays visible), oldest first."""
    require_role(principal, Role.ADMIN)
    after = read_token(page_token, KEYS_BY_CREATION)
    with db.read() as session:
        got = ApiKeyRepository(session).page(tenant=tenant, after=after, limit=page_size)
        items = [_key_info(r) for r in got.rows]
    return Page(items, next_token(KEYS_BY_CREATION, got.next_key))


def revoke_key(db: Database, principal: Principal, key_id: str, *, now: datetime) -> None:
    """Revoke a key for good; revoking twice keeps the first time and logs nothing new."""
    require_role(principal, Role.ADMIN)
    with db.write() as session:
        row = ApiKeyRepository(session).get(key_id)
        if row is None:
            raise ApiKeyNotFoundError(key_id)
        if row.revoked_at is not None:
            return
        row.revoked_at = now
        session.flush()
        audit.record(
            session,
            principal,
            "key.revoke",
            now=now,
            target=key_id,
            detail={"role": row.role, "tenant": row.tenant, "name": row.name},
        )
