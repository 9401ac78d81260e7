"""When each API key was last used, kept fresh to within a period without slowing auth."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from hpo_service.db.database import Database
from hpo_service.db.repositories import ApiKeyRepository

__all__ = ["KeyUsageRecorder"]


class KeyUsageRecorder:
    """Keeps ``api_keys.last_used_at`` fresh to within ``period`` without slowing auth.

    A process remembers when it last wrote each key and skips the database until
    ``period`` has passed; the UPDATE itself is conditional, so several processes also
    write at most about once per period between them.
    """

    def __init__(self, db: Database, *, period_seconds: float = 60.0) -> None:
        self.db = db
        self.period = timedelta(seconds=period_seconds)
        self._last: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def due(self, key_id: str, now: datetime) -> bool:
        """Whether this process should write ``key_id``'s last use now."""
        with self._lock:
            last = self._last.get(key_id)
            if last is not None and now - last < self.period:
                return False
            if len(self._last) > 100_000:
                self._last.clear()  # bounded; forgetting only costs one extra UPDATE
            self._last[key_id] = now
            return True

    def record(self, key_id: str, now: datetime) -> None:
        """Note a use of ``key_id`` at ``now`` (a no-op most of the time)."""
        if self.due(key_id, now):
            self.write(key_id, now)

    def write(self, key_id: str, now: datetime) -> None:
        """Store the use unless another process stored one within the period."""
        with self.db.write() as session:
            ApiKeyRepository(session).touch(key_id, now, now - self.period)
