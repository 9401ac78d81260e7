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
  machine; servers on several machines must configure the secret (a server with another
  one refuses to start: ``hpo_service.db.key_secret_check``).

The file is never in the database, so a stolen database dump alone cannot check a guessed
key. An in-memory SQLite database gets a fresh secret per process, like its data.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import time
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

    Creation is atomic: the secret is written to a private temporary file and flushed to
    disk (a crash must not leave an empty file behind, which would lock every key out),
    then hard-linked into place, which fails if another process got there first, so
    concurrent first starts end up with the same secret and nobody reads a half-written
    file. Where the filesystem has no hard links, ``O_CREAT | O_EXCL`` on the final path
    decides the race instead (losers wait briefly until the winner's file is complete).
    """
    path = key_secret_path(url)
    if path is None:
        return secrets.token_bytes(32)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    content = (secrets.token_hex(32) + "\n").encode()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    try:
        _write_durably(tmp, content)
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process was first: use theirs
            pass
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            _create_exclusively(path, content)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_when_complete(path)


# errno values of "this filesystem cannot hard-link" (FAT, some network and FUSE mounts).
_NO_HARD_LINKS = frozenset(
    code
    for code in (
        errno.EPERM,
        errno.EXDEV,
        errno.EMLINK,
        getattr(errno, "ENOTSUP", None),
        getattr(errno, "EOPNOTSUPP", None),
        getattr(errno, "ENOSYS", None),
    )
    if code is not None
)


def _write_durably(path: Path, content: bytes) -> None:
    """Create ``path`` (only this user may read it) with ``content``, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusively(path: Path, content: bytes) -> None:
    """Fallback without hard links: the first process to create ``path`` writes it."""
    with contextlib.suppress(FileExistsError):
        _write_durably(path, content)


def _read_when_complete(path: Path, wait_s: float = 2.0) -> bytes:
    """Read the secret; a file being written by the fallback may briefly be empty."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _read(path)
        except ValueError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    if len(text) < 32:
        raise ValueError(f"{path} holds no usable key secret (expected 64 hex digits)")
    return text.encode()
