"""How every CLI command opens the database: build it from settings, migrate, check the key secret.

One place, because ``hpo serve``/``keys``/``extrapolate`` (``cli.py``) and ``hpo
export``/``import`` (``admin_cli.py``) must open it the same way: a command that skipped
the key-secret check could record a foreign secret as the database's, or write key rows
that no server can verify.
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
