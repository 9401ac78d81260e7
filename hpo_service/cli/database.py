"""How every CLI command opens the database: build it from settings, migrate, check the key secret.

One place, because ``hpo serve``/``keys``/``extrapolate`` (``cli/main.py``) and ``hpo
export``/``import`` (``cli/admin.py``) must open it the same way.

The key-secret check is on for the other commands (``serve``, ``keys create``,
``import``): a key row written or verified under a foreign secret would verify on no
server. ``migrate``, ``export`` and ``extrapolate`` leave it off on purpose.
They never hash or verify a key (``export`` copies the hashes and the database's own
check value verbatim), and the check is not read-only: on a database without a check
value the first check records the caller's secret, generating one into a file when none
is configured. A migration or backup job run without ``HPO_KEY_HASH_SECRET`` would then
tie the database to its own secret and lock the servers out
(tests/security/test_key_secret_check.py holds all three to this).
"""

from __future__ import annotations

from hpo_service.config import Settings
from hpo_service.db.database import Database
from hpo_service.db.key_secret_check import KeySecretMismatchError
from hpo_service.db.migrate import upgrade_to_head

__all__ = ["open_migrated"]


def open_migrated(settings: Settings, *, check_secret: bool) -> Database:
    """Open and migrate the database; with ``check_secret``, refuse a foreign key secret.

    Raises:
        KeySecretMismatchError: ``check_secret`` and the database records another secret
            (the handle is disposed first).
    """
    db = Database(
        settings.database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.db_pool_size,
        key_secret=settings.key_secret,
    )
    upgrade_to_head(db.engine)
    if check_secret:
        try:
            db.verify_key_secret()
        except KeySecretMismatchError:
            db.dispose()
            raise
    return db
