"""A short-lived, per-process cache of authenticated keys.

Every request authenticates; without a cache that is one database read per heartbeat or
report, often more than the work itself. Entries live ``ttl`` seconds (default 5,
``HPO_AUTH_CACHE_SECONDS``). A key revoked through this process is forgotten at once
(``forget_key``, in the revoking request); other server processes learn of it when their
entry ages out, so there it keeps working for at most ``ttl`` seconds. An expired key
stops within ``ttl`` the same way. Only a digest of the token is kept as the cache key,
never the token.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

from hpo_service.domain import Principal

__all__ = ["AuthCache"]


class AuthCache:
    """Maps token digests to principals for ``ttl`` seconds; bounded LRU."""

    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Principal | None:
        """The cached principal for ``token``, if fresh."""
        if self.ttl <= 0:
            return None
        digest = self._digest(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            stored_at, principal = entry
            if time.monotonic() - stored_at > self.ttl:
                del self._entries[digest]
                return None
            return principal

    def put(self, token: str, principal: Principal) -> None:
        """Remember a successful authentication."""
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[self._digest(token)] = (time.monotonic(), principal)
            self._entries.move_to_end(self._digest(token))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget_key(self, key_id: str) -> int:
        """Drop every entry of the key ``key_id`` (it was just revoked); returns how many.

        Entries are found by the principal they hold, since the cache never keeps the
        token: a linear scan, fine for an admin action on at most ``max_entries``.
        """
        with self._lock:
            stale = [d for d, (_, p) in self._entries.items() if p.key_id == key_id]
            for digest in stale:
                del self._entries[digest]
        return len(stale)

    def clear(self) -> None:
        """Forget everything (e.g. after revoking a key in this process)."""
        with self._lock:
            self._entries.clear()
