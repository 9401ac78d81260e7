"""The server secret API-key hashes are keyed with, when none is configured.

Production sets ``HPO_KEY_HASH_SECRET`` to the same value on every server. Without it,
every process that opens the same database must still agree on one secret: ``hpo serve
--workers 4`` starts four processes, and ``hpo keys create`` runs in yet another. So the
secret is generated once, at first use, and kept in a file only this user can read:

* next to a SQLite database file (``hpo.db`` → ``hpo.db.key-secret``), so it travels and
  is deleted with the database it belongs to;
* for a server database (PostgreSQL), under ``$XDG_CONFIG_HOME/hpo`` (default
  ``~/.config/hpo``), one file per database server and user (the URL without password
  and database name, so throwaway test databases share one file). That covers one
  machine; servers on several machines must configure the secret, or keys created on
  one fail on the others.

The file is never in the database, so a stolen database dump alone cannot check a guessed
key. An in-memory SQLite database gets a fresh secret per process, like its data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["key_secret_path", "load_or_create_key_secret"]


def key_secret_path(url: str) -> Path | None:
    """Where the generated secret of the database at ``url`` lives (None: in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            return None
        return Path(database).with_name(Path(database).name + ".key-secret")
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "hpo"
    where = f"{parsed.get_backend_name()}://{parsed.username or ''}@{parsed.host}:{parsed.port}"
    return base / f"key-secret-{hashlib.sha256(where.encode()).hexdigest()[:16]}"


def load_or_create_key_secret(url: str) -> bytes:
    """The secret for ``url``: read from its file, or generated and stored there first.

    Creation is atomic (written to a private temporary file, then hard-linked into
    place, which fails if another process got there first), so concurrent first starts
    end up with the same secret and nobody reads a half-written file.
    """
    path = key_secret_path(url)
    if path is None:
        return secrets.token_bytes(32)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process was first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    if len(text) < 32:
        raise ValueError(f"{path} holds no usable key secret (expected 64 hex digits)")
    return text.encode()
