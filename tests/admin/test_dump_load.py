"""hpo export / hpo import: lossless JSONL round trip, SQLite → PostgreSQL, every field."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hpo_service.api.app import create_app
from hpo_service.cli.admin import add_admin_parsers
from hpo_service.client import HPOClient
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.migrate import upgrade_to_head
from hpo_service.db.models import ApiKeyRow, AuditRow, MeasurementRow, StudyRow, TrialRow
from hpo_service.domain import Role
from hpo_service.errors import ConflictError, InvalidInputError
from hpo_service.services import api_keys, dump
from tests.builders import params, study
from tests.postgres import fresh_postgres_database

TABLES = [ApiKeyRow, StudyRow, TrialRow, MeasurementRow, AuditRow]
RENUMBERED = {"measurements": {"id"}, "audit_log": {"id"}}


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hpo")
    add_admin_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every column of every row (surrogate ids aside), in a stable order."""
    out: dict[str, list[dict[str, Any]]] = {}
    with db.read() as session:
        for row_cls in TABLES:
            table = row_cls.__table__
            skip = RENUMBERED.get(table.name, set())
            rows = session.execute(select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [
                {c.name: r._mapping[c] for c in table.columns if c.name not in skip} for r in rows
            ]
    return out


def populate(db: Database) -> tuple[str, str]:
    """Studies with trials in every state, measurements, costs, metadata, scale, keys."""
    admin_key = api_keys.create_key(db, role=Role.ADMIN, tenant="ops", now=utcnow()).key
    client_key = api_keys.create_key(db, role=Role.CLIENT, tenant="acme", now=utcnow()).key
    worker_key = api_keys.create_key(db, role=Role.WORKER, tenant="acme", now=utcnow()).key
    from fastapi.testclient import TestClient

    app = create_app(Settings(database_url=db.url, reclaim_interval_seconds=3600), db=db)
    with TestClient(app) as http:
        client = HPOClient(api_key=client_key, http=http)
        worker = HPOClient(api_key=worker_key, http=http)
        a = client.create_study(
            study(family="gpt", metadata={"owner": "ml", "nested": {"k": [1, 2.5]}})
        )["id"]
        b = client.create_study(study(name="second", seed=None))["id"]
        for i, t in enumerate(worker.suggest(a, "w1", 3)["trials"]):
            worker.report(t["id"], "w1", 1, {"val_loss": 3.0 + i, "lr_now": 1e-3}, elapsed_s=0.25)
            worker.report(t["id"], "w1", 2, {"val_loss": 2.0 + i}, elapsed_s=0.5)
            if i == 0:
                worker.complete(t["id"], "w1", {"val_loss": 0.1 + 1e-12}, {"gpu_seconds": 1.5})
            elif i == 1:
                worker.fail(t["id"], "w1", "boom ✗ unicode", retry=True)
        client.add_trial(b, params(optimizer="muon"), {"val_loss": 1 / 3}, {"tag": "imported"})
        client.add_trial(b, params(lr=0.05))
        http.post(
            "/v1/admin/keys",
            json={"role": "worker", "tenant": "acme", "name": "k"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    return a, b


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    with fresh_postgres_database("hpo_rt") as url:
        yield url


@pytest.mark.postgres
def test_sqlite_to_postgres_round_trip_is_lossless(tmp_path: Path, fresh_pg: str) -> None:
    source = Database(f"sqlite:///{tmp_path / 'src.db'}")
    upgrade_to_head(source.engine)
    populate(source)
    dump_file = tmp_path / "all.jsonl"
    assert run_cli("export", "--database-url", source.url, "-o", str(dump_file)) == 0
    assert run_cli("import", str(dump_file), "--database-url", fresh_pg) == 0
    target = Database(fresh_pg)
    try:
        before, after = snapshot(source), snapshot(target)
        assert before["trials"]
        assert before["measurements"]
        assert before["api_keys"]
        for table in ("api_keys", "studies", "trials", "measurements"):
            assert after[table] == before[table], table
        # The target's log has the source's entries, then the import itself.
        assert after["audit_log"][:-1] == before["audit_log"]
        assert after["audit_log"][-1]["action"] == "import"
        # And back again: PostgreSQL → SQLite gives the same rows.
        back_file = tmp_path / "back.jsonl"
        assert run_cli("export", "--database-url", fresh_pg, "-o", str(back_file)) == 0
        again = Database(f"sqlite:///{tmp_path / 'again.db'}")
        assert run_cli("import", str(back_file), "--database-url", again.url) == 0
        for table in ("api_keys", "studies", "trials", "measurements"):
            assert snapshot(again)[table] == before[table], table
        again.dispose()
    finally:
        source.dispose()
        target.dispose()


@pytest.mark.committed  # the CLI reads the database through its own connection
def test_one_study_export_and_conflicts(db: Database, tmp_path: Path) -> None:
    """Runs on both backends: one study out of the shared DB, into a fresh SQLite file."""
    a, _b = populate(db)
    dump_file = tmp_path / "one.jsonl"
    assert run_cli("export", "--study", a, "--database-url", db.url, "-o", str(dump_file)) == 0
    kinds = [json.loads(line)["kind"] for line in dump_file.read_text().splitlines()]
    assert kinds[0] == dump.DUMP_FORMAT
    assert set(kinds[1:]) == {"study", "trial", "measurement"}
    target = Database(f"sqlite:///{tmp_path / 'one.db'}")
    upgrade_to_head(target.engine)
    counts = dump.load(target, dump_file.open(), now=utcnow())
    assert counts.written == {"study": 1, "trial": 3, "measurement": 6}
    src, dst = snapshot(db), snapshot(target)
    assert dst["studies"] == [s for s in src["studies"] if s["id"] == a]
    assert dst["trials"] == [t for t in src["trials"] if t["study_id"] == a]
    # Importing again conflicts, all or nothing; --skip-existing skips instead.
    with pytest.raises(ConflictError):
        dump.load(target, dump_file.open(), now=utcnow())
    assert snapshot(target)["trials"] == dst["trials"]
    assert run_cli("import", str(dump_file), "--database-url", target.url) == 2
    counts = dump.load(target, dump_file.open(), skip_existing=True, now=utcnow())
    assert counts.written == {}
    assert counts.skipped == {"study": 1, "trial": 3, "measurement": 6}
    target.dispose()
    assert run_cli("export", "--study", "st_" + "0" * 24, "--database-url", db.url) == 2


def test_malformed_files_are_refused_with_the_line(db: Database) -> None:
    header = json.dumps({"kind": dump.DUMP_FORMAT, "version": 1}) + "\n"
    cases = [
        ([], "empty file"),
        (['{"kind": "something-else"}\n'], "not an"),
        ([header, "{not json\n"], "not JSON"),
        ([header, '{"kind": "table", "row": {}}\n'], "unknown record kind"),
        ([header, '{"kind": "study", "row": {"id": "x", "bogus": 1}}\n'], "unknown columns"),
        ([header, '{"kind": "study", "row": {"id": "x"}}\n'], "missing column"),
    ]
    for lines, message in cases:
        with pytest.raises(InvalidInputError, match=message) as info:
            dump.load(db, lines, now=utcnow())
        assert info.value.errors[0].loc[0] == "line"
