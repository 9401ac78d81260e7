"""Lossless dump and load of the database (``hpo export`` / ``hpo import``).

Every column of every row, typed (timestamps as RFC 3339, bytes as base64), one JSON line
a row: a whole database or one study moves between SQLite and PostgreSQL without losing
a field. Only the surrogate ids of measurements and audit entries are renumbered (their
order is kept); idempotency records, a 24-hour replay cache, are not history and are
left out. Rows stream ``chunk`` at a time both ways, so memory stays flat. The analysis
export of trial history is another product: ``services/export.py``.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, cast

from sqlalchemy import LargeBinary, Table
from sqlalchemy.exc import IntegrityError

from hpo_service.db.base import UTCDateTime
from hpo_service.db.database import Database
from hpo_service.db.ids import is_wellformed
from hpo_service.db.key_secret_check import check_value
from hpo_service.db.migrate import head_revision
from hpo_service.db.models import ApiKeyRow, AuditRow, MeasurementRow, StudyRow, TrialRow
from hpo_service.db.repositories import DumpRepository, StudyRepository
from hpo_service.errors import ConflictError, InvalidInputError, StudyNotFoundError
from hpo_service.services import audit

__all__ = ["DUMP_FORMAT", "DumpCounts", "dump", "load"]

DUMP_FORMAT = "hpo-export"
DUMP_VERSION = 1
_CHUNK = 1000


@dataclass
class DumpCounts:
    """How many rows of each kind a dump wrote or a load inserted (or skipped)."""

    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, kind: str, n: int = 1, *, skipped: bool = False) -> None:
        """Count ``n`` more rows of ``kind``."""
        target = self.skipped if skipped else self.written
        target[kind] = target.get(kind, 0) + n


# kind → (table, columns left out because they are surrogate keys renumbered on load)
_KINDS: dict[str, tuple[Table, frozenset[str]]] = {
    "api_key": (cast(Table, ApiKeyRow.__table__), frozenset()),
    "study": (cast(Table, StudyRow.__table__), frozenset()),
    "trial": (cast(Table, TrialRow.__table__), frozenset()),
    "measurement": (cast(Table, MeasurementRow.__table__), frozenset({"id"})),
    "audit": (cast(Table, AuditRow.__table__), frozenset({"id"})),
}
# A study's dump holds these kinds; the others belong to no study.
_STUDY_KINDS = ["study", "trial", "measurement"]
# Insert order: a row's parents are flushed before it.
_ORDER = ["api_key", "study", "trial", "measurement", "audit"]


def _encode(table: Table, skip: frozenset[str], row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        if column.name in skip:
            continue
        value = row._mapping[column]
        if value is not None and isinstance(column.type, UTCDateTime):
            value = value.isoformat()
        elif value is not None and isinstance(column.type, LargeBinary):
            value = base64.b64encode(value).decode()
        out[column.name] = value
    return out


def _decode(table: Table, skip: frozenset[str], data: dict[str, Any], line: int) -> dict[str, Any]:
    unknown = set(data) - {c.name for c in table.columns}
    if unknown:
        raise InvalidInputError.at(("line", line), f"unknown columns {sorted(unknown)}")
    out: dict[str, Any] = {}
    for column in table.columns:
        if column.name in skip:
            continue
        if column.name not in data and not column.nullable:
            raise InvalidInputError.at(("line", line), f"missing column {column.name!r}")
        value = data.get(column.name)
        try:
            if value is not None and isinstance(column.type, UTCDateTime):
                value = datetime.fromisoformat(value)
            elif value is not None and isinstance(column.type, LargeBinary):
                value = base64.b64decode(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError.at(("line", line), f"bad {column.name}: {exc}") from exc
        out[column.name] = value
    return out


def _line(kind: str, row: dict[str, Any]) -> str:
    return json.dumps({"kind": kind, "row": row}, separators=(",", ":"), allow_nan=True) + "\n"


def dump(db: Database, out: IO[str], *, study_id: str | None = None, now: datetime) -> DumpCounts:
    """Write the whole database (keys, studies, trials, measurements, audit) or one study.

    The first line is a header naming the format, its version and the schema revision;
    a whole-database dump also carries the database's key-secret check value, so an
    import can tell whether its keys will verify on the target (the value reveals nothing
    about the secret).

    Raises:
        StudyNotFoundError: ``study_id`` names no study.
    """
    counts = DumpCounts()
    header = {
        "kind": DUMP_FORMAT,
        "version": DUMP_VERSION,
        "schema": head_revision(),
        "scope": "study" if study_id else "database",
        "exported_at": now.isoformat(),
    }
    with db.read() as session:
        if study_id is not None and (
            not is_wellformed(study_id) or StudyRepository(session).get(study_id) is None
        ):
            raise StudyNotFoundError(study_id)
        repo = DumpRepository(session)
        if study_id is None:
            header["key_secret_check"] = repo.key_secret_check()
        out.write(json.dumps(header) + "\n")
        for kind in _ORDER if study_id is None else _STUDY_KINDS:
            table, skip = _KINDS[kind]
            for row in repo.rows(table, study_id=study_id, chunk=_CHUNK):
                out.write(_line(kind, _encode(table, skip, row)))
                counts.add(kind)
    return counts


class _Loader:
    """Batches decoded rows per table and inserts them parents first."""

    def __init__(self, repo: DumpRepository, *, skip_existing: bool, batch: int = _CHUNK) -> None:
        self.repo = repo
        self.skip_existing = skip_existing
        self.batch = batch
        self.pending: dict[str, list[dict[str, Any]]] = {k: [] for k in _ORDER}
        self.skipped_studies: set[str] = set()
        self.skipped_trials: set[str] = set()
        self.counts = DumpCounts()

    def add(self, kind: str, row: dict[str, Any]) -> None:
        if kind == "trial" and row["study_id"] in self.skipped_studies:
            self.skipped_trials.add(row["id"])
            self.counts.add(kind, skipped=True)
            return
        if kind == "measurement" and row["trial_id"] in self.skipped_trials:
            self.counts.add(kind, skipped=True)
            return
        self.pending[kind].append(row)
        if len(self.pending[kind]) >= self.batch:
            self.flush()

    def _drop_existing(self, kind: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        table = _KINDS[kind][0]
        existing = self.repo.existing_ids(table, [r["id"] for r in rows])
        if not existing:
            return rows
        if not self.skip_existing:
            shown = ", ".join(sorted(existing)[:5])
            raise ConflictError(
                f"{len(existing)} {kind} rows already exist (e.g. {shown}); "
                "import into an empty database or skip existing rows"
            )
        if kind == "study":
            self.skipped_studies |= existing
        self.counts.add(kind, len(existing), skipped=True)
        return [r for r in rows if r["id"] not in existing]

    def flush(self) -> None:
        for kind in _ORDER:
            rows = self.pending[kind]
            if not rows:
                continue
            self.pending[kind] = []
            if kind in ("api_key", "study"):
                rows = self._drop_existing(kind, rows)
            if kind == "trial" and self.skipped_studies:
                kept = [r for r in rows if r["study_id"] not in self.skipped_studies]
                self.skipped_trials |= {r["id"] for r in rows} - {r["id"] for r in kept}
                self.counts.add(kind, len(rows) - len(kept), skipped=True)
                rows = kept
            if kind == "measurement" and self.skipped_trials:
                kept = [r for r in rows if r["trial_id"] not in self.skipped_trials]
                self.counts.add(kind, len(rows) - len(kept), skipped=True)
                rows = kept
            if rows:
                self.repo.insert(_KINDS[kind][0], rows)
                self.counts.add(kind, len(rows))


def _parse(
    lines: Iterable[str], header: dict[str, Any]
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, kind, decoded row) of every record after a valid header.

    The header itself is copied into ``header`` once read.
    """
    header_seen = False
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError.at(("line", number), f"not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise InvalidInputError.at(("line", number), "each line must be a JSON object")
        if not header_seen:
            if record.get("kind") != DUMP_FORMAT or record.get("version") != DUMP_VERSION:
                raise InvalidInputError.at(
                    ("line", number), f"not an {DUMP_FORMAT} v{DUMP_VERSION} file"
                )
            header_seen = True
            header.update(record)
            continue
        kind, row = record.get("kind"), record.get("row")
        if kind not in _KINDS or not isinstance(row, dict):
            raise InvalidInputError.at(("line", number), f"unknown record kind {kind!r}")
        table, skip = _KINDS[kind]
        yield number, kind, _decode(table, skip, row, number)
    if not header_seen:
        raise InvalidInputError.at(("line", 1), "empty file: no export header")


def _foreign_key_warning(repo: DumpRepository, db: Database, header: dict[str, Any]) -> list[str]:
    """A warning when the dump's keys were hashed under another secret than the target's.

    Cheap and certain when the dump carries its check value; dumps written before it did
    (or of a database that never checked one) cannot tell, and get no warning.
    """
    theirs = header.get("key_secret_check")
    if not isinstance(theirs, str):
        return []
    ours = repo.key_secret_check() or check_value(db.key_secret)
    if hmac.compare_digest(theirs, ours):
        return []
    return [
        "the imported API keys were hashed under another key-hash secret than this "
        "database's, so they will not verify here. To keep them, import into a fresh "
        "database with the source's secret (HPO_KEY_HASH_SECRET, or its secret file "
        "copied into place); otherwise create new keys with `hpo keys create`."
    ]


def load(
    db: Database, lines: Iterable[str], *, skip_existing: bool = False, now: datetime
) -> DumpCounts:
    """Insert what ``dump`` wrote, all or nothing, and log the import in the audit log.

    Args:
        skip_existing: keep keys and studies that already exist (and skip the dump's
            trials of such studies) instead of refusing the whole import.

    Raises:
        InvalidInputError: the file is not a dump or a line is malformed (line number
            given).
        ConflictError: a key or study already exists and ``skip_existing`` is false.
    """
    header: dict[str, Any] = {}
    with db.write() as session:
        loader = _Loader(DumpRepository(session), skip_existing=skip_existing)
        try:
            for _number, kind, row in _parse(lines, header):
                loader.add(kind, row)
            loader.flush()
        except IntegrityError as exc:
            raise ConflictError(f"import conflicts with existing rows: {exc.orig}") from exc
        if loader.counts.written.get("api_key"):
            loader.counts.warnings.extend(_foreign_key_warning(loader.repo, db, header))
        audit.record(
            session,
            None,
            "import",
            now=now,
            detail={"written": loader.counts.written, "skipped": loader.counts.skipped},
        )
    return loader.counts
