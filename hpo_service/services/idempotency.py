"""Idempotency-Key bookkeeping: the first response to a keyed POST is replayed.

A key is scoped to the caller (a digest of its credentials) so two clients cannot read
each other's responses. The first request inserts a placeholder row; a duplicate that
arrives while it runs gets 409 instead of running twice; the finished response is
stored and replayed for ``ttl`` seconds. Same key with a different body → 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from hpo_service.db.database import Database
from hpo_service.db.models import IdempotencyRow
from hpo_service.db.repositories import IdempotencyRepository
from hpo_service.errors import IdempotencyConflictError

__all__ = ["StoredResponse", "abandon", "begin", "finish", "purge_expired"]


@dataclass(frozen=True)
class StoredResponse:
    """A response recorded for replay."""

    status_code: int
    content_type: str | None
    body: bytes


def begin(
    db: Database, *, scope: str, key: str, digest: str, now: datetime, ttl_seconds: float
) -> StoredResponse | None:
    """Claim ``key`` for this request, or return the response to replay.

    Raises:
        IdempotencyConflictError: the key was used with another body, or its first
            request is still in flight.
    """
    try:
        with db.write() as session:
            repo = IdempotencyRepository(session)
            row = repo.get(scope, key)
            if row is not None and row.created_at < now - timedelta(seconds=ttl_seconds):
                repo.delete(scope, key)
                session.flush()
                row = None
            if row is None:
                repo.add(
                    IdempotencyRow(scope=scope, key=key, request_digest=digest, created_at=now)
                )
                return None
            if row.request_digest != digest:
                raise IdempotencyConflictError(
                    "this Idempotency-Key was already used with a different request"
                )
            if row.status_code is None:
                raise IdempotencyConflictError(
                    "a request with this Idempotency-Key is still being processed; retry later"
                )
            return StoredResponse(row.status_code, row.content_type, row.body or b"")
    except IntegrityError as exc:  # a concurrent duplicate inserted first
        raise IdempotencyConflictError(
            "a request with this Idempotency-Key is still being processed; retry later"
        ) from exc


def finish(
    db: Database, *, scope: str, key: str, status_code: int, content_type: str | None, body: bytes
) -> None:
    """Record the response of the request that claimed ``key``."""
    with db.write() as session:
        row = IdempotencyRepository(session).get(scope, key)
        if row is not None:
            row.status_code = status_code
            row.content_type = content_type
            row.body = body


def abandon(db: Database, *, scope: str, key: str) -> None:
    """Release ``key`` (the request failed on our side), so a retry runs afresh."""
    with db.write() as session:
        IdempotencyRepository(session).delete(scope, key)


def purge_expired(db: Database, *, now: datetime, ttl_seconds: float) -> int:
    """Forget keys older than the replay window."""
    with db.write() as session:
        return IdempotencyRepository(session).purge_before(now - timedelta(seconds=ttl_seconds))
