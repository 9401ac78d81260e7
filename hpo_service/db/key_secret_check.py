"""The check value that ties a database to the server secret its API-key hashes use.

Key hashes are ``HMAC(server secret, key secret)``, so a process holding another server
secret rejects every key, the admin key included, and (before this check) nothing said
why. That happens without any mistake in code: two hosts each generating their own
secret, the CLI reaching PostgreSQL as ``localhost`` while the server uses ``127.0.0.1``
(another secret file), ``HPO_KEY_HASH_SECRET`` set after keys were made, a SQLite file
restored without its ``.key-secret``.

So the database stores ``HMAC(secret, "hpo-key-secret-check")`` (table
``key_secret_check``), written by the first process that checks. Every later process
compares its own value: equal, it goes on; different, it refuses to start with a message
that says which secret to restore. The value reveals nothing about the secret, and
without the secret a dump cannot produce it.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo_service.db.base import utcnow
from hpo_service.db.models import KeySecretCheckRow

__all__ = ["KeySecretMismatchError", "check_value", "mismatch_message", "record_or_compare"]

_MESSAGE = b"hpo-key-secret-check"
_ROW_ID = 1


class KeySecretMismatchError(RuntimeError):
    """This process's key-hash secret is not the one the database's keys were hashed with."""


def check_value(secret: bytes) -> str:
    """The check value of ``secret``: a keyed digest of a fixed message, hex."""
    return hmac.new(secret, _MESSAGE, hashlib.sha256).hexdigest()


def record_or_compare(session: Session, secret: bytes) -> bool:
    """Store the check value of ``secret`` when the database has none; else compare.

    Returns:
        True when the database's value is (now) that of ``secret``.
    """
    ours = check_value(secret)
    stored = session.scalar(
        select(KeySecretCheckRow.check_value).where(KeySecretCheckRow.id == _ROW_ID)
    )
    if stored is None:
        session.add(KeySecretCheckRow(id=_ROW_ID, check_value=ours, created_at=utcnow()))
        session.flush()
        return True
    return hmac.compare_digest(stored, ours)


def mismatch_message(url: str, *, configured: bool, secret_file: Path | None) -> str:
    """What the operator must do when the secret does not match, in words."""
    where = (
        "the configured HPO_KEY_HASH_SECRET"
        if configured
        else f"the generated secret in {secret_file}"
        if secret_file is not None
        else "a secret generated for this in-memory database"
    )
    return (
        f"the API-key hash secret of this process ({where}) is not the one the API keys "
        f"of the database {url} were hashed with, so no key would verify. Set "
        "HPO_KEY_HASH_SECRET to the original value (the same on every server and for the "
        "CLI), or copy the original secret file (the .key-secret next to a SQLite "
        "database, ~/.config/hpo/key-secret-* of the first server for PostgreSQL) into "
        "place. To start over with this secret instead (every existing key stops "
        "working), delete the row of the key_secret_check table and create new keys "
        "with `hpo keys create`."
    )
