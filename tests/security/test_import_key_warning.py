"""`hpo import` warns when the keys it brings in were hashed under another secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo_service.cli import main as cli
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.migrate import upgrade_to_head
from hpo_service.domain import Role
from hpo_service.errors import AuthenticationError
from hpo_service.services import api_keys


def _source_with_a_key(tmp_path: Path, secret: str) -> tuple[Path, str]:
    db = Database(f"sqlite:///{tmp_path / 'src.db'}", key_secret=secret)
    try:
        upgrade_to_head(db.engine)
        db.verify_key_secret()
        key = api_keys.create_key(db, role=Role.ADMIN, tenant="t", now=utcnow()).key
        dump = tmp_path / "all.jsonl"
        assert cli.main(["export", "--database-url", db.url, "-o", str(dump)]) == 0
    finally:
        db.dispose()
    return dump, key


@pytest.mark.parametrize(
    ("target_secret", "warned"), [("another-secret", True), ("the-source-secret", False)]
)
def test_import_warns_only_when_keys_will_not_verify(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target_secret: str,
    warned: bool,
) -> None:
    dump, key = _source_with_a_key(tmp_path, "the-source-secret")
    monkeypatch.setenv("HPO_KEY_HASH_SECRET", target_secret)
    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    capsys.readouterr()
    assert cli.main(["import", str(dump), "--database-url", target_url]) == 0
    err = capsys.readouterr().err
    assert ("warning: the imported API keys were hashed under another" in err) is warned
    target = Database(target_url, key_secret=target_secret)
    try:
        target.verify_key_secret()
        if warned:
            with pytest.raises(AuthenticationError):
                api_keys.authenticate(target, key, now=utcnow())
        else:
            assert api_keys.authenticate(target, key, now=utcnow()).role is Role.ADMIN
    finally:
        target.dispose()
