"""API keys are stored as HMAC-SHA256 under a server secret; old plain SHA-256 rows still work."""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hpo_service.api.app import create_app
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.key_secret import key_secret_path, load_or_create_key_secret
from hpo_service.db.migrate import upgrade_to_head
from hpo_service.db.models import ApiKeyRow
from hpo_service.domain import Role
from hpo_service.errors import AuthenticationError
from hpo_service.services import api_keys
from tests.security.key_rows import stored_hash


def _secret_of(key: str) -> str:
    return key.rsplit("_", 1)[1]


def test_stored_hash_is_hmac_under_the_server_secret(db: Database) -> None:
    issued = api_keys.create_key(db, role=Role.WORKER, tenant="t", now=utcnow())
    secret = _secret_of(issued.key)
    stored = stored_hash(db, issued.id)
    assert stored == hmac.new(db.key_secret, secret.encode(), hashlib.sha256).hexdigest()
    assert stored != hashlib.sha256(secret.encode()).hexdigest()
    assert api_keys.authenticate(db, issued.key, now=utcnow()).key_id == issued.id


@pytest.mark.committed  # a second Database handle reads the key
def test_another_server_secret_cannot_verify(db: Database) -> None:
    issued = api_keys.create_key(db, role=Role.WORKER, tenant="t", now=utcnow())
    other = Database(db.url, key_secret="a-different-server-secret")
    try:
        with pytest.raises(AuthenticationError):
            api_keys.authenticate(other, issued.key, now=utcnow())
    finally:
        other.dispose()


def test_legacy_sha256_key_still_works_and_is_rehashed(db: Database) -> None:
    issued = api_keys.create_key(db, role=Role.CLIENT, tenant="t", now=utcnow())
    secret = _secret_of(issued.key)
    legacy = hashlib.sha256(secret.encode()).hexdigest()
    with db.write() as session:  # as stored before the switch to HMAC
        row = session.get(ApiKeyRow, issued.id)
        assert row is not None
        row.secret_hash = legacy
    assert api_keys.authenticate(db, issued.key, now=utcnow()).key_id == issued.id
    upgraded = stored_hash(db, issued.id)
    assert upgraded == hmac.new(db.key_secret, secret.encode(), hashlib.sha256).hexdigest()
    assert api_keys.authenticate(db, issued.key, now=utcnow()).key_id == issued.id
    # a wrong secret matches neither form (flip the last hex digit: it may already be "0")
    wrong = issued.key[:-1] + ("1" if issued.key.endswith("0") else "0")
    with pytest.raises(AuthenticationError):
        api_keys.authenticate(db, wrong, now=utcnow())


def test_legacy_hash_of_a_wrong_secret_is_refused(db: Database) -> None:
    issued = api_keys.create_key(db, role=Role.CLIENT, tenant="t", now=utcnow())
    with db.write() as session:
        row = session.get(ApiKeyRow, issued.id)
        assert row is not None
        row.secret_hash = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(AuthenticationError):
        api_keys.authenticate(db, issued.key, now=utcnow())
    assert stored_hash(db, issued.id) == hashlib.sha256(b"something else").hexdigest()


def test_configured_secret_is_what_the_app_hashes_with(tmp_path: Path) -> None:
    # A database of its own: the shared one is tied to the generated secret (a configured
    # one would be refused there, see test_key_secret_check.py).
    url = f"sqlite:///{tmp_path / 'configured.db'}"
    plain = Database(url)
    upgrade_to_head(plain.engine)
    settings = Settings(database_url=url, key_hash_secret="configured-secret-value")
    app = create_app(settings)
    with TestClient(app) as client:
        assert app.state.db.key_secret == b"configured-secret-value"
        key = api_keys.create_key(app.state.db, role=Role.CLIENT, tenant="t", now=utcnow()).key
        assert (
            client.get("/v1/studies", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        )
    # the same key under the generated secret of a plain handle does not verify
    try:
        with pytest.raises(AuthenticationError):
            api_keys.authenticate(plain, key, now=utcnow())
    finally:
        plain.dispose()


def test_generated_secret_is_persisted_once_and_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    path = key_secret_path(url)
    assert path == tmp_path / "k.db.key-secret"
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_or_create_key_secret(url)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert len(results[0]) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.db.key-secret"]  # no temp files
    assert Database(url).key_secret == results[0]  # a second process reads the same one


def test_server_database_secret_is_per_server_not_per_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    a = key_secret_path("postgresql+psycopg://u:pw@db.example:5432/one")
    b = key_secret_path("postgresql+psycopg://u:other@db.example:5432/two")
    c = key_secret_path("postgresql+psycopg://u@elsewhere:5432/one")
    assert a == b != c
    assert a is not None
    assert a.parent == tmp_path / "hpo"
    assert key_secret_path("sqlite://") is None


def test_secret_file_is_created_without_hard_links_and_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FAT, some network and FUSE mounts refuse link(2): the secret must still be created
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    secret = load_or_create_key_secret(url)
    assert len(secret) == 64
    assert synced  # flushed before it is published: a crash cannot leave an empty file
    path = key_secret_path(url)
    assert path is not None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.db.key-secret"]
    assert load_or_create_key_secret(url) == secret


def test_unexpected_link_errors_are_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_link(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "link", failing_link)
    with pytest.raises(OSError, match="I/O error"):
        load_or_create_key_secret(f"sqlite:///{tmp_path / 'k.db'}")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
