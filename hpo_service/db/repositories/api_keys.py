"""Queries on API keys. Flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from hpo_service.db.keyset import Key, Keyset, KeysetSlice
from hpo_service.db.models import ApiKeyRow

__all__ = ["KEYS_BY_CREATION", "ApiKeyRepository"]

KEYS_BY_CREATION = Keyset("keys", ApiKeyRow.created_at, ApiKeyRow.id)


class ApiKeyRepository:
    """Every query on the ``api_keys`` table."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: ApiKeyRow) -> ApiKeyRow:
        """Insert a key row (its secret already hashed)."""
        self.session.add(row)
        self.session.flush()
        return row

    def get(self, key_id: str) -> ApiKeyRow | None:
        """One key by id, revoked or not."""
        return self.session.get(ApiKeyRow, key_id)

    def count(self) -> int:
        """How many keys exist (revoked included)."""
        return int(self.session.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)

    def all(self) -> Sequence[ApiKeyRow]:
        """Every key, oldest first."""
        return self.session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at)).all()

    def replace_hash(self, key_id: str, *, old: str, new: str) -> bool:
        """Swap a key's stored hash, only if it still is ``old``; whether it did."""
        result = self.session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id, ApiKeyRow.secret_hash == old)
            .values(secret_hash=new)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    def page(self, *, tenant: str | None, after: Key | None, limit: int) -> KeysetSlice[ApiKeyRow]:
        """Up to ``limit`` keys in creation order after the key ``after``."""
        stmt = select(ApiKeyRow)
        if tenant is not None:
            stmt = stmt.where(ApiKeyRow.tenant == tenant)
        return KEYS_BY_CREATION.fetch_scalars(self.session, stmt, after=after, limit=limit)

    def touch(self, key_id: str, now: datetime, older_than: datetime) -> bool:
        """Set ``last_used_at`` unless it is already newer than ``older_than``.

        The condition lives in the UPDATE so concurrent server processes write at most
        once per period between them, and a no-op costs one indexed primary-key probe.
        """
        stmt = (
            update(ApiKeyRow)
            .where(
                ApiKeyRow.id == key_id,
                or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < older_than),
            )
            .values(last_used_at=now)
        )
        return bool(self.session.execute(stmt).rowcount)  # type: ignore[attr-defined]
