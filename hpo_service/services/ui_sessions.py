"""Dashboard sessions: an API key logs in once; the browser then holds a signed cookie.

The cookie never contains the key. It reads ``<key id>.<expiry>.<nonce>.<signature>``,
signed with HMAC-SHA256 under a per-key signing key: ``HMAC(server key secret, the key's
stored secret hash)``. That choice gives these properties without a session table:

* every server process can verify any session (the hash is in the shared database, the
  server secret is the same everywhere: ``hpo_service.db.key_secret_check`` sees to it);
* revoking or expiring the key ends its sessions at once (verification re-reads the row);
* a database dump alone cannot mint sessions: the stored hash is only half of the
  signing key, the other half is the server secret, which is never in the database;
* a stolen dump plus secret still cannot mint sessions for keys since rotated.

The CSRF token of a session is another HMAC of its nonce under the same hash, so forms
carry a token an attacker on another site can neither read nor compute.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from hpo_service.db.database import Database
from hpo_service.db.repositories import ApiKeyRepository
from hpo_service.domain import Principal, Role
from hpo_service.errors import AuthenticationError, PermissionDeniedError
from hpo_service.services import api_keys, audit

__all__ = ["UiSession", "check_csrf", "open_session", "resume_session"]

_INVALID = "the dashboard session is invalid or expired; log in again"


@dataclass(frozen=True)
class UiSession:
    """A verified session: who, the cookie value, and its CSRF token."""

    principal: Principal
    cookie: str
    csrf: str
    expires_at: datetime


def _signing_key(db: Database, secret_hash: str) -> bytes:
    """The key sessions of one API key are signed with: needs the server secret too."""
    return hmac.new(db.key_secret, b"ui-session." + secret_hash.encode(), hashlib.sha256).digest()


def _sign(signing_key: bytes, message: str) -> str:
    return hmac.new(signing_key, message.encode(), hashlib.sha256).hexdigest()


def _secret_hash(db: Database, key_id: str) -> str | None:
    with db.read() as session:
        row = ApiKeyRepository(session).get(key_id)
        return None if row is None else row.secret_hash


def _build(principal: Principal, signing_key: bytes, expiry: int, nonce: str) -> UiSession:
    body = f"{principal.key_id}.{expiry}.{nonce}"
    return UiSession(
        principal=principal,
        cookie=f"{body}.{_sign(signing_key, body)}",
        csrf=_sign(signing_key, f"csrf.{nonce}"),
        expires_at=datetime.fromtimestamp(expiry).astimezone(),
    )


def open_session(db: Database, key: str, *, now: datetime, ttl_seconds: float) -> UiSession:
    """Log in with an API key (client or admin role); the login is audited.

    Raises:
        AuthenticationError: the key is missing, unknown, revoked or expired.
        PermissionDeniedError: a worker key (workers have no business in the dashboard).
    """
    principal = api_keys.authenticate(db, key.strip(), now=now)
    if not principal.role.includes(Role.CLIENT):
        raise PermissionDeniedError("the dashboard needs a client or admin key")
    secret_hash = _secret_hash(db, principal.key_id)
    if secret_hash is None:
        raise AuthenticationError(_INVALID)
    expiry = int((now + timedelta(seconds=ttl_seconds)).timestamp())
    audit.record_now(db, principal, "ui.login", now=now, target=principal.key_id)
    return _build(principal, _signing_key(db, secret_hash), expiry, secrets.token_hex(16))


def resume_session(db: Database, cookie: str | None, *, now: datetime) -> UiSession:
    """Verify a session cookie and re-check its key (revoked or expired keys fail).

    Raises:
        AuthenticationError: no cookie, a forged or expired one, or its key is gone.
    """
    parts = (cookie or "").rsplit(".", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        raise AuthenticationError(_INVALID)
    key_id, expiry, nonce, signature = parts
    if int(expiry) <= now.timestamp():
        raise AuthenticationError(_INVALID)
    with db.read() as session:
        row = ApiKeyRepository(session).get(key_id)
        if row is not None:
            session.expunge(row)
    signing_key = _signing_key(db, row.secret_hash if row else "")
    expected = _sign(signing_key, f"{key_id}.{expiry}.{nonce}")
    if (
        row is None
        or not hmac.compare_digest(expected, signature)
        or row.revoked_at is not None
        or (row.expires_at is not None and row.expires_at <= now)
    ):
        raise AuthenticationError(_INVALID)
    principal = Principal(key_id=row.id, role=Role(row.role), tenant=row.tenant)
    return _build(principal, signing_key, int(expiry), nonce)


def check_csrf(session: UiSession, token: str | None) -> None:
    """Refuse a form post whose token is not this session's.

    Raises:
        PermissionDeniedError: the token is missing or wrong.
    """
    if not token or not hmac.compare_digest(session.csrf, token):
        raise PermissionDeniedError("missing or invalid CSRF token; reload the page")
