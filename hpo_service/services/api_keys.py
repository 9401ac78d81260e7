"""API keys: issue, verify, list, revoke. Only a keyed hash of each secret is ever stored.

A key reads ``hpo_<key id>_<secret hex>``. The id finds the row; the secret (256 random
bits) is checked against ``HMAC-SHA256(server secret, secret)`` in constant time.

Why HMAC and not a slow password hash (bcrypt, scrypt, Argon2): slow hashes exist to
make guessing low-entropy passwords expensive. A 256-bit random secret cannot be guessed
at any hash speed (2^255 tries on average), so a slow hash would buy nothing and cost
tens of milliseconds on every authentication that misses the cache. What a keyed hash
adds is that a stolen database alone is useless: without the server secret (configured,
or generated into a file outside the database: ``hpo_service.db.key_secret``) nobody can
even test whether a candidate key matches a stored hash.

Keys stored before the switch hold a plain SHA-256 of the secret. They keep working
without a migration: verification computes both digests (so timing says nothing about
which one matched), and the first successful use of such a key rewrites its hash as
HMAC, after which the plain digest no longer matches. That rewrite happens only when the
process's secret is the database's (its check value, ``hpo_service.db.key_secret_check``).
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


def _hash(key_secret: bytes, secret: str) -> str:
    """The stored form of a key's secret: HMAC-SHA256 under the server secret, hex."""
    return hmac.new(key_secret, secret.encode(), hashlib.sha256).hexdigest()


def _legacy_hash(secret: str) -> str:
    """The stored form before HMAC (plain SHA-256); only ever compared, never written."""
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
                secret_hash=_hash(db.key_secret, secret),
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
    secret = parts[1] if parts is not None else ""
    current = _hash(db.key_secret, secret)
    # With no row, compare against a digest anyway, so an unknown id costs the same time.
    expected = row.secret_hash if row is not None else _hash(db.key_secret, "")
    matches_current = hmac.compare_digest(expected, current)
    matches_legacy = hmac.compare_digest(expected, _legacy_hash(secret))
    if (
        row is None
        or not (matches_current or matches_legacy)
        or row.revoked_at is not None
        or (row.expires_at is not None and row.expires_at <= now)
    ):
        raise AuthenticationError("invalid, revoked or expired API key")
    if matches_legacy and not matches_current and db.key_secret_matches():
        # Only under the secret the database is tied to: a rehash under another one
        # would lock this key out of every process that holds the right secret.
        _upgrade_hash(db, row.id, old=expected, new=current)
    return Principal(key_id=row.id, role=Role(row.role), tenant=row.tenant)


def _upgrade_hash(db: Database, key_id: str, *, old: str, new: str) -> None:
    """Replace a verified plain SHA-256 hash by the HMAC one (once per legacy key)."""
    with db.write() as session:
        ApiKeyRepository(session).replace_hash(key_id, old=old, new=new)


def ensure_admin_key(db: Database, *, now: datetime, key: str | None = None) -> IssuedKey | None:
    """On first start (no key at all), create an admin key and return it; else None."""
    with db.read() as session:
        if ApiKeyRepository(session).count() > 0:
            return None
    return create_key(
        db, role=Role.ADMIN, tenant="default", name="bootstrap admin", now=now, key=key
    )
