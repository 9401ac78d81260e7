"""API keys: issue, verify, list, revoke. Only a hash of each secret is ever stored.

A key reads ``hpo_<key id>_<secret hex>``. The id finds the row; the secret (256 random
bits) is compared by SHA-256 digest in constant time. A fast hash is enough for secrets
of that entropy (no dictionary to guess from), and it keeps authentication cheap on
every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from hpo_service.db.database import Database
from hpo_service.db.ids import new_id
from hpo_service.db.models import ApiKeyRow
from hpo_service.db.repositories import ApiKeyRepository
from hpo_service.domain import Principal, Role
from hpo_service.errors import AuthenticationError, InvalidInputError

__all__ = ["IssuedKey", "authenticate", "create_key", "ensure_admin_key"]

_PREFIX = "hpo"


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key; ``key`` is shown once and never stored."""

    id: str
    key: str
    role: Role
    tenant: str
    name: str
    created_at: datetime
    expires_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    prefix, _, rest = token.partition("_")
    key_id, sep, secret = rest.rpartition("_")
    if prefix != _PREFIX or not sep or not key_id or not secret:
        return None
    return key_id, secret


def _check_tenant(tenant: str) -> None:
    if not tenant or len(tenant) > 128:
        raise InvalidInputError.at(("body", "tenant"), "tenant must have 1 to 128 characters")


def create_key(
    db: Database,
    *,
    role: Role,
    tenant: str,
    name: str = "",
    expires_at: datetime | None = None,
    now: datetime,
    key: str | None = None,
) -> IssuedKey:
    """Store a new key's hash and return the key itself (the only time it exists).

    Args:
        key: an explicit key to store (bootstrap from configuration); must look like one
            this function generates.
    """
    _check_tenant(tenant)
    if key is None:
        key_id = new_id("key")
        secret = secrets.token_hex(32)
        key = f"{_PREFIX}_{key_id}_{secret}"
    else:
        parts = _split(key)
        if parts is None:
            raise InvalidInputError.at(("key",), "a key must look like hpo_<id>_<secret>")
        key_id, secret = parts
    with db.write() as session:
        ApiKeyRepository(session).add(
            ApiKeyRow(
                id=key_id,
                name=name,
                role=role.value,
                tenant=tenant,
                secret_hash=_hash(secret),
                created_at=now,
                expires_at=expires_at,
            )
        )
    return IssuedKey(key_id, key, role, tenant, name, now, expires_at)


def authenticate(db: Database, token: str | None, *, now: datetime) -> Principal:
    """The principal a bearer token stands for.

    Raises:
        AuthenticationError: missing, malformed, unknown, revoked or expired key; the
            message never says which, so a caller cannot probe for valid ids.
    """
    if not token:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    parts = _split(token)
    row = None
    if parts is not None:
        with db.read() as session:
            row = ApiKeyRepository(session).get(parts[0])
            if row is not None:
                session.expunge(row)
    expected = row.secret_hash if row is not None else _hash("")
    secret = parts[1] if parts is not None else ""
    valid = hmac.compare_digest(expected, _hash(secret)) and row is not None
    if (
        not valid
        or row is None
        or row.revoked_at is not None
        or (row.expires_at is not None and row.expires_at <= now)
    ):
        raise AuthenticationError("invalid, revoked or expired API key")
    return Principal(key_id=row.id, role=Role(row.role), tenant=row.tenant)


def ensure_admin_key(db: Database, *, now: datetime, key: str | None = None) -> IssuedKey | None:
    """On first start (no key at all), create an admin key and return it; else None."""
    with db.read() as session:
        if ApiKeyRepository(session).count() > 0:
            return None
    return create_key(
        db, role=Role.ADMIN, tenant="default", name="bootstrap admin", now=now, key=key
    )
