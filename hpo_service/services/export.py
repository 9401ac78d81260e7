"""The history export: one record per trial for analysis (``GET /v1/admin/export``).

CSV and Parquet are flat (``param.<name>`` and ``metric.<name>`` columns; Parquet is
written one row group per chunk); JSONL nests params, result and measurements. Rows are
read ``chunk`` at a time (``ExportRepository.stream``) and measurements fetched once per
chunk, so memory stays flat however many trials there are. The lossless copy of a whole
database is another product: ``services/dump.py``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from hpo_service.db.database import Database
from hpo_service.db.ids import is_wellformed
from hpo_service.db.models import MeasurementRow
from hpo_service.db.repositories import ExportRepository, StudyRepository, TrialFilter
from hpo_service.db.repositories.trial_filter import TrialWithStudy
from hpo_service.domain import Principal, Role
from hpo_service.errors import StudyNotFoundError
from hpo_service.services import audit
from hpo_service.services.access import require_role

__all__ = ["ExportFormat", "HistoryExport", "history_stream"]

ExportFormat = Literal["csv", "jsonl", "parquet"]
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


def _layout(repo: ExportRepository, flt: TrialFilter) -> _Columns:
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
        repo = ExportRepository(session)
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
        cols = _layout(ExportRepository(session), flt)
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
