"""Exports: trial history as CSV/JSONL/Parquet streams, and lossless JSONL dumps.

Two different products share this module because they share the streaming discipline:
rows are read ``chunk`` at a time with ``yield_per`` (a server-side cursor on PostgreSQL)
and measurements are fetched once per chunk, so memory stays flat however many trials
there are.

* ``history_stream``: one record per trial for analysis (``GET /v1/admin/export``).
  CSV and Parquet are flat (``param.<name>`` and ``metric.<name>`` columns; Parquet is
  written one row group per chunk); JSONL nests params, result and measurements.
* ``dump`` / ``load``: every column of every row, typed (timestamps as RFC 3339, bytes
  as base64), for ``hpo export`` / ``hpo import``: a whole database or one study moves
  between SQLite and PostgreSQL without losing a field. Only the surrogate ids of
  measurements and audit entries are renumbered (their order is kept); idempotency
  records, a 24-hour replay cache, are not history and are left out.
"""

from __future__ import annotations

import base64
import csv
import hmac
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import LargeBinary, Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hpo_service.db.base import UTCDateTime
from hpo_service.db.database import Database
from hpo_service.db.ids import is_wellformed
from hpo_service.db.key_secret_check import check_value
from hpo_service.db.migrate import head_revision
from hpo_service.db.models import (
    ApiKeyRow,
    AuditRow,
    KeySecretCheckRow,
    MeasurementRow,
    StudyRow,
    TrialRow,
)
from hpo_service.db.repositories import AdminRepository, StudyRepository, TrialFilter
from hpo_service.db.repositories.admin import TrialWithStudy
from hpo_service.domain import Principal, Role
from hpo_service.errors import ConflictError, InvalidInputError, StudyNotFoundError
from hpo_service.services import audit
from hpo_service.services.access import require_role

__all__ = [
    "DUMP_FORMAT",
    "DumpCounts",
    "ExportFormat",
    "HistoryExport",
    "dump",
    "history_stream",
    "load",
]

ExportFormat = Literal["csv", "jsonl", "parquet"]
DUMP_FORMAT = "hpo-export"
DUMP_VERSION = 1
_CHUNK = 1000

_MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}

_FIXED = [
    "study_id",
    "study_name",
    "tenant",
    "family",
    "trial_id",
    "number",
    "state",
    "source",
    "worker_id",
    "attempt",
    "value",
    "created_at",
    "started_at",
    "finished_at",
    "lease_expires_at",
    "error",
]
_FIXED_TYPES: dict[str, pa.DataType] = {
    "number": pa.int64(),
    "attempt": pa.int64(),
    "value": pa.float64(),
    "created_at": pa.timestamp("us", tz="UTC"),
    "started_at": pa.timestamp("us", tz="UTC"),
    "finished_at": pa.timestamp("us", tz="UTC"),
    "lease_expires_at": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class HistoryExport:
    """A ready-to-send export: its media type, a file name and the byte chunks."""

    media_type: str
    filename: str
    chunks: Iterator[bytes]


@dataclass
class _Columns:
    """The flat layout of an export, known before the first row is written."""

    params: dict[str, pa.DataType]
    metrics: list[str]

    @property
    def names(self) -> list[str]:
        return [
            *_FIXED,
            *(f"param.{p}" for p in self.params),
            *(f"metric.{m}" for m in self.metrics),
            "cost",
            "metadata",
            "measurements",
        ]


def _param_type(kind: str) -> pa.DataType:
    return {"int": pa.int64(), "float": pa.float64(), "ordinal": pa.float64()}.get(
        kind, pa.string()
    )


def _layout(repo: AdminRepository, flt: TrialFilter) -> _Columns:
    """Parameter names and types from the studies' spaces; metric names from the data."""
    params: dict[str, pa.DataType] = {}
    metrics: set[str] = set()
    for study in repo.studies(flt):
        for p in study.space.get("parameters", []):
            kind = _param_type(str(p.get("type")))
            seen = params.setdefault(str(p["name"]), kind)
            if seen != kind:
                params[str(p["name"])] = pa.string()  # same name, different kinds
        metrics.add(str(study.objective.get("metric")))
    metrics.update(repo.result_keys(flt, chunk=_CHUNK * 10))
    return _Columns(params, sorted(metrics))


def _json(value: Any) -> str:
    return json.dumps(
        value, separators=(",", ":"), sort_keys=True, allow_nan=True, default=_default
    )


def _record(row: TrialWithStudy, measurements: list[MeasurementRow]) -> dict[str, Any]:
    """The nested JSONL record of one trial."""
    t = row.trial
    return {
        "study_id": t.study_id,
        "study_name": row.study_name,
        "tenant": row.tenant,
        "family": row.family,
        "trial_id": t.id,
        "number": t.number,
        "state": t.state,
        "source": t.source,
        "worker_id": t.worker_id,
        "attempt": t.attempt,
        "value": t.value,
        "created_at": t.created_at,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "lease_expires_at": t.lease_expires_at,
        "error": t.error,
        "params": dict(t.params),
        "result": t.result,
        "cost": t.cost,
        "metadata": dict(t.meta or {}),
        "measurements": [
            {"step": m.step, "metrics": m.metrics, "elapsed_s": m.elapsed_s, "at": m.at}
            for m in measurements
        ],
    }


def _flat(record: dict[str, Any], cols: _Columns) -> dict[str, Any]:
    """The CSV/Parquet row of one trial."""
    out = {k: record[k] for k in _FIXED}
    params = record["params"]
    for name in cols.params:
        out[f"param.{name}"] = params.get(name)
    metrics = (record["result"] or {}).get("metrics") or {}
    for name in cols.metrics:
        out[f"metric.{name}"] = metrics.get(name)
    out["cost"] = None if record["cost"] is None else _json(record["cost"])
    out["metadata"] = _json(record["metadata"])
    out["measurements"] = _json(record["measurements"]) if record["measurements"] else None
    return out


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _csv_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


def _csv(chunks: Iterator[list[dict[str, Any]]], cols: _Columns) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(cols.names)
    for chunk in chunks:
        for record in chunk:
            flat = _flat(record, cols)
            writer.writerow([_csv_cell(flat[n]) for n in cols.names])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def _jsonl(chunks: Iterator[list[dict[str, Any]]]) -> Iterator[bytes]:
    for chunk in chunks:
        lines = [json.dumps(r, default=_default, allow_nan=True) for r in chunk]
        yield ("\n".join(lines) + "\n").encode()


class _Drain:
    """A write-only file that hands its bytes back, so Parquet streams row group by group."""

    closed = False

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def write(self, data: bytes) -> int:
        self._buffer.extend(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Nothing to flush: bytes leave through ``take``."""

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def _arrow_column(values: list[Any], kind: pa.DataType) -> pa.Array:
    if kind == pa.string():
        return pa.array([None if v is None else str(v) for v in values], type=kind)
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. an imported value of another type
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _parquet_schema(cols: _Columns) -> pa.Schema:
    fields = [pa.field(n, _FIXED_TYPES.get(n, pa.string())) for n in _FIXED]
    fields += [pa.field(f"param.{p}", t) for p, t in cols.params.items()]
    fields += [pa.field(f"metric.{m}", pa.float64()) for m in cols.metrics]
    fields += [pa.field(n, pa.string()) for n in ("cost", "metadata", "measurements")]
    return pa.schema(fields)


def _parquet(chunks: Iterator[list[dict[str, Any]]], cols: _Columns) -> Iterator[bytes]:
    schema = _parquet_schema(cols)
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema)
    try:
        for chunk in chunks:
            flat = [_flat(r, cols) for r in chunk]
            arrays = []
            for f in schema:
                column = _arrow_column([row[f.name] for row in flat], f.type)
                arrays.append(column if column.type == f.type else column.cast(f.type))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


def _records(db: Database, flt: TrialFilter) -> Iterator[list[dict[str, Any]]]:
    """Chunks of nested trial records; holds one read transaction while iterated."""
    with db.read() as session:
        repo = AdminRepository(session)
        for part in repo.stream(flt, chunk=_CHUNK):
            measurements = repo.measurements([r.trial.id for r in part])
            yield [_record(r, measurements[r.trial.id]) for r in part]


def history_stream(
    db: Database,
    principal: Principal,
    *,
    fmt: ExportFormat,
    study_id: str | None,
    now: datetime,
) -> HistoryExport:
    """An export of every trial (or one study's), to stream to the caller.

    Everything that can fail (permission, unknown study) is checked before the first byte,
    so errors are still proper problem responses; the export is logged in the audit log.

    Raises:
        PermissionDeniedError: for non-admin keys.
        StudyNotFoundError: ``study_id`` names no study.
    """
    require_role(principal, Role.ADMIN)
    flt = TrialFilter(study_id=study_id)
    with db.write() as session:
        if study_id is not None and (
            not is_wellformed(study_id) or StudyRepository(session).get(study_id) is None
        ):
            raise StudyNotFoundError(study_id)
        cols = _layout(AdminRepository(session), flt)
        audit.record(
            session,
            principal,
            "export",
            now=now,
            target=study_id,
            detail={"format": fmt, "scope": "study" if study_id else "all"},
        )
    records = _records(db, flt)
    chunks: Iterator[bytes]
    if fmt == "csv":
        chunks = _csv(records, cols)
    elif fmt == "jsonl":
        chunks = _jsonl(records)
    else:
        chunks = _parquet(records, cols)
    stem = f"trials-{study_id}" if study_id else "trials"
    return HistoryExport(_MEDIA[fmt], f"{stem}.{fmt}", chunks)


# -- lossless dump / load -------------------------------------------------------------------


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
    "api_key": (ApiKeyRow.__table__, frozenset()),  # type: ignore[dict-item]
    "study": (StudyRow.__table__, frozenset()),  # type: ignore[dict-item]
    "trial": (TrialRow.__table__, frozenset()),  # type: ignore[dict-item]
    "measurement": (MeasurementRow.__table__, frozenset({"id"})),  # type: ignore[dict-item]
    "audit": (AuditRow.__table__, frozenset({"id"})),  # type: ignore[dict-item]
}
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


def _rows(session: Session, kind: str, where: Any = None) -> Iterator[dict[str, Any]]:
    table, skip = _KINDS[kind]
    stmt = select(table)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.order_by(*table.primary_key.columns).execution_options(yield_per=_CHUNK)
    for row in session.execute(stmt):
        yield _encode(table, skip, row)


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
        if study_id is None:
            header["key_secret_check"] = session.scalar(select(KeySecretCheckRow.check_value))
        out.write(json.dumps(header) + "\n")
        study_t, trial_t, meas_t = (_KINDS[k][0] for k in ("study", "trial", "measurement"))
        if study_id is None:
            kinds: list[tuple[str, Any]] = [(k, None) for k in _ORDER]
        else:
            trial_ids = select(trial_t.c.id).where(trial_t.c.study_id == study_id)
            kinds = [
                ("study", study_t.c.id == study_id),
                ("trial", trial_t.c.study_id == study_id),
                ("measurement", meas_t.c.trial_id.in_(trial_ids)),
            ]
        for kind, where in kinds:
            for row in _rows(session, kind, where):
                out.write(_line(kind, row))
                counts.add(kind)
    return counts


class _Loader:
    """Batches decoded rows per table and inserts them parents first."""

    def __init__(self, session: Session, *, skip_existing: bool, batch: int = _CHUNK) -> None:
        self.session = session
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

    def _existing(self, table: Table, ids: list[str]) -> set[str]:
        stmt = select(table.c.id).where(table.c.id.in_(ids))
        return {str(i) for i in self.session.scalars(stmt)}

    def _drop_existing(self, kind: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        table = _KINDS[kind][0]
        existing = self._existing(table, [r["id"] for r in rows])
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
                self.session.execute(insert(_KINDS[kind][0]), rows)
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


def _foreign_key_warning(session: Session, db: Database, header: dict[str, Any]) -> list[str]:
    """A warning when the dump's keys were hashed under another secret than the target's.

    Cheap and certain when the dump carries its check value; dumps written before it did
    (or of a database that never checked one) cannot tell, and get no warning.
    """
    theirs = header.get("key_secret_check")
    if not isinstance(theirs, str):
        return []
    ours = session.scalar(select(KeySecretCheckRow.check_value)) or check_value(db.key_secret)
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
        loader = _Loader(session, skip_existing=skip_existing)
        try:
            for _number, kind, row in _parse(lines, header):
                loader.add(kind, row)
            loader.flush()
        except IntegrityError as exc:
            raise ConflictError(f"import conflicts with existing rows: {exc.orig}") from exc
        if loader.counts.written.get("api_key"):
            loader.counts.warnings.extend(_foreign_key_warning(session, db, header))
        audit.record(
            session,
            None,
            "import",
            now=now,
            detail={"written": loader.counts.written, "skipped": loader.counts.skipped},
        )
    return loader.counts
