"""A process whose key-hash secret is not the database's refuses to run, and says why.

Without the check value in the database these situations failed every authentication
silently (and a legacy key's first use rehashed it under the wrong secret, locking it out
everywhere else): another host or CLI that generated its own secret, a secret configured
after keys were made, a SQLite file restored without its ``.key-secret``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from hpo_service.api.app import create_app
from hpo_service.cli import main as cli
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.key_secret import key_secret_path
from hpo_service.db.key_secret_check import check_value
from hpo_service.db.migrate import upgrade_to_head
from hpo_service.db.models import ApiKeyRow, KeySecretCheckRow
from hpo_service.domain import Role
from hpo_service.services import api_keys


def _fresh_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    db = Database(url)
    upgrade_to_head(db.engine)
    db.dispose()
    return url


def test_app_refuses_a_secret_other_than_the_one_keys_were_made_with(tmp_path: Path) -> None:
    url = _fresh_sqlite(tmp_path)
    first = create_app(Settings(database_url=url, key_hash_secret="the-original-secret"))
    key = api_keys.create_key(first.state.db, role=Role.ADMIN, tenant="t", now=utcnow()).key
    with pytest.raises(RuntimeError, match="HPO_KEY_HASH_SECRET to the original value"):
        create_app(Settings(database_url=url, key_hash_secret="set-later-to-something-else"))
    # and the right secret still starts, and its key still verifies
    again = create_app(Settings(database_url=url, key_hash_secret="the-original-secret"))
    assert api_keys.authenticate(again.state.db, key, now=utcnow()).role is Role.ADMIN


def test_sqlite_restored_without_its_secret_file_is_refused(tmp_path: Path) -> None:
    url = _fresh_sqlite(tmp_path)
    create_app(Settings(database_url=url))  # generates hpo.db.key-secret, ties the db to it
    secret_file = key_secret_path(url)
    assert secret_file is not None
    saved = secret_file.read_bytes()
    secret_file.unlink()  # as if only hpo.db had been backed up and restored
    with pytest.raises(RuntimeError, match=str(secret_file)):
        create_app(Settings(database_url=url))
    secret_file.write_bytes(saved)  # copying the file back is the documented fix
    create_app(Settings(database_url=url))


def test_cli_with_another_secret_refuses_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _fresh_sqlite(tmp_path)
    monkeypatch.setenv("HPO_KEY_HASH_SECRET", "the-servers-secret")
    create = ["keys", "create", "--tenant", "t", "--database-url", url]
    assert cli.main([*create, "--role", "admin"]) == 0
    monkeypatch.setenv("HPO_KEY_HASH_SECRET", "what-the-cli-host-has")
    assert cli.main([*create, "--role", "client"]) == 2
    assert "HPO_KEY_HASH_SECRET" in capsys.readouterr().err
    db = Database(url, key_secret="the-servers-secret")
    try:
        with db.read() as session:
            assert session.scalars(select(ApiKeyRow.role)).all() == ["admin"]
    finally:
        db.dispose()


def test_migrate_alone_does_not_tie_the_database_to_its_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a migration job run without the servers' secret must not lock the servers out
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    monkeypatch.setenv("HPO_KEY_HASH_SECRET", "a-migration-jobs-secret")
    assert cli.main(["migrate", "--database-url", url]) == 0
    create_app(Settings(database_url=url, key_hash_secret="the-servers-secret"))


@pytest.mark.committed  # another host's Database reads the key
def test_legacy_key_is_not_rehashed_under_a_foreign_secret(db: Database) -> None:
    db.verify_key_secret()  # this database belongs to the fixture's secret
    issued = api_keys.create_key(db, role=Role.ADMIN, tenant="t", now=utcnow())
    legacy = hashlib.sha256(issued.key.rsplit("_", 1)[1].encode()).hexdigest()
    with db.write() as session:
        row = session.get(ApiKeyRow, issued.id)
        assert row is not None
        row.secret_hash = legacy
    other_host = Database(db.url, key_secret="another-hosts-own-secret")
    try:
        with pytest.raises(RuntimeError, match="HPO_KEY_HASH_SECRET"):
            other_host.verify_key_secret()
        # a process that skipped the check may verify the legacy hash, but not rewrite it
        api_keys.authenticate(other_host, issued.key, now=utcnow())
    finally:
        other_host.dispose()
    with db.read() as session:
        row = session.get(ApiKeyRow, issued.id)
        assert row is not None
        assert row.secret_hash == legacy
    assert api_keys.authenticate(db, issued.key, now=utcnow()).key_id == issued.id


@pytest.mark.committed  # another host's Database reads the check value
def test_second_postgres_host_with_its_own_generated_secret_is_refused(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.is_sqlite:
        pytest.skip("the per-host secret file is the PostgreSQL case")
    db.verify_key_secret()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # another machine's home
    other_host = Database(db.url)
    try:
        with pytest.raises(RuntimeError, match=r"generated secret in .*key-secret-"):
            other_host.verify_key_secret()
    finally:
        other_host.dispose()


@pytest.mark.committed  # six handles race on their own connections
def test_concurrent_first_starts_agree_on_one_check_value(db: Database) -> None:
    with db.write() as session:
        session.execute(delete(KeySecretCheckRow))
    handles = [Database(db.url) for _ in range(6)]
    errors: list[BaseException] = []

    def start(handle: Database) -> None:
        try:
            handle.verify_key_secret()
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in handles:
        h.dispose()
    assert errors == []
    with db.read() as session:
        assert session.scalars(select(KeySecretCheckRow.check_value)).all() == [
            check_value(db.key_secret)
        ]


def _check_values(url: str) -> list[str]:
    db = Database(url, key_secret="only-to-read")
    try:
        with db.read() as session:
            return list(session.scalars(select(KeySecretCheckRow.check_value)).all())
    finally:
        db.dispose()


def test_export_reads_under_any_secret_and_keeps_the_sources_check_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a backup job need not hold the servers' secret: export copies key hashes verbatim
    # and the database's own check value, so a check would only refuse a correct backup
    url = _fresh_sqlite(tmp_path)
    monkeypatch.setenv("HPO_KEY_HASH_SECRET", "the-servers-secret")
    assert (
        cli.main(["keys", "create", "--role", "admin", "--tenant", "t", "--database-url", url]) == 0
    )
    monkeypatch.setenv("HPO_KEY_HASH_SECRET", "a-backup-hosts-secret")
    dump = tmp_path / "dump.jsonl"
    assert cli.main(["export", "--database-url", url, "-o", str(dump)]) == 0
    header = json.loads(dump.read_text().splitlines()[0])
    assert header["key_secret_check"] == check_value(b"the-servers-secret")
    assert _check_values(url) == [check_value(b"the-servers-secret")]


def test_migrate_export_and_extrapolate_tie_a_fresh_database_to_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were they to check, a migration or backup job without HPO_KEY_HASH_SECRET would
    # generate a secret file, record its check value, and lock out the servers' secret.
    monkeypatch.delenv("HPO_KEY_HASH_SECRET", raising=False)
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    assert cli.main(["migrate", "--database-url", url]) == 0
    assert cli.main(["export", "--database-url", url, "-o", str(tmp_path / "d.jsonl")]) == 0
    # extrapolate reads a study and computes (here: a missing study, exit 2)
    extrapolate = ["extrapolate", "--study", "st_missing", "--target", "width=1024"]
    assert cli.main([*extrapolate, "--database-url", url]) == 2
    secret_file = key_secret_path(url)
    assert secret_file is not None
    assert not secret_file.exists()
    assert _check_values(url) == []
    create_app(Settings(database_url=url, key_hash_secret="the-servers-secret"))
