"""The server's periodic task: reclaim expired leases and forget old idempotency keys.

It runs in a daemon thread of every server process; the work is idempotent and uses row
locks (``SKIP LOCKED`` on PostgreSQL, study rows before trial rows like every other
writer), so several processes doing it at once is safe and none waits on a busy study.
A reclaim moves trials only through the domain's transitions (``services.leases``), and
one that fails a study's last unfinished trial completes the study in the same round.
"""

from __future__ import annotations

import logging
import threading

from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.services import idempotency, leases

__all__ = ["Housekeeper"]

log = logging.getLogger(__name__)


class Housekeeper:
    """Runs ``tick`` every ``settings.reclaim_interval_seconds`` until stopped."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """One round; returns how many leases were reclaimed."""
        now = utcnow()
        reclaimed = leases.reclaim_expired(self.db, now)
        idempotency.purge_expired(
            self.db, now=now, ttl_seconds=self.settings.idempotency_ttl_seconds
        )
        return reclaimed

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.reclaim_interval_seconds):
            try:
                reclaimed = self.tick()
                if reclaimed:
                    log.info("requeued %d trials with expired leases", reclaimed)
            except Exception:  # the database may be down; try again next round
                log.warning("housekeeping round failed", exc_info=True)

    def start(self) -> None:
        """Start the background thread (again, if a previous lifespan stopped it)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name="hpo-housekeeping", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to finish and wait briefly for it."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)
