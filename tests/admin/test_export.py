"""GET /v1/admin/export in every format: one record per trial, streamed."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from tests.admin.conftest import History
from tests.conftest import Keys


def export(app_client: TestClient, headers: dict[str, str], **query: str) -> bytes:
    with app_client.stream("GET", "/v1/admin/export", params=query, headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert "attachment" in r.headers["content-disposition"]
        return b"".join(r.iter_bytes())


def test_csv_has_one_header_and_a_row_per_trial(
    app_client: TestClient, admin_headers: dict[str, str], history: History
) -> None:
    data = export(app_client, admin_headers, format="csv").decode()
    rows = list(csv.DictReader(io.StringIO(data)))
    assert len(rows) == 7
    assert data.count("trial_id,") == 1
    header = data.splitlines()[0].split(",")
    assert {
        "param.lr",
        "param.optimizer",
        "param.ns_steps",
        "metric.val_loss",
        "metric.acc",
    } <= set(header)
    by_id = {r["trial_id"]: r for r in rows}
    done = by_id[history.completed[0]]
    assert done["state"] == "completed"
    assert float(done["metric.val_loss"]) == 1.0
    assert json.loads(done["cost"]) == {"gpu_seconds": 3}
    assert json.loads(done["measurements"])[0]["step"] == 10
    assert by_id[history.imported[0]]["metric.acc"] == "0.9"
    assert by_id[history.queued]["metric.val_loss"] == ""


def test_csv_of_one_study(
    app_client: TestClient, admin_headers: dict[str, str], history: History
) -> None:
    data = export(app_client, admin_headers, format="csv", study_id=history.globex_study)
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert {r["trial_id"] for r in rows} == set(history.imported)


def test_jsonl_nests_params_results_and_measurements(
    app_client: TestClient, admin_headers: dict[str, str], history: History
) -> None:
    lines = export(app_client, admin_headers, format="jsonl").decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 7
    by_id = {r["trial_id"]: r for r in records}
    done = by_id[history.completed[1]]
    assert done["result"] == {"metrics": {"val_loss": 0.5}}
    assert done["measurements"][0]["metrics"] == {"val_loss": 1.0}
    assert done["params"]["optimizer"] in ("adamw", "muon")
    assert by_id[history.failed]["error"] == "out of memory"
    assert by_id[history.active]["worker_id"] == "w2"


def test_parquet_has_a_row_per_trial_with_typed_columns(
    app_client: TestClient, admin_headers: dict[str, str], history: History
) -> None:
    table = pq.read_table(io.BytesIO(export(app_client, admin_headers, format="parquet")))
    assert table.num_rows == 7
    schema = table.schema
    assert str(schema.field("param.lr").type) == "double"
    assert str(schema.field("param.layers").type) == "int64"
    assert str(schema.field("param.optimizer").type) == "string"
    assert str(schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    assert rows[history.imported[1]]["metric.val_loss"] == 1.3
    assert rows[history.queued]["metric.val_loss"] is None


def test_export_of_an_empty_database_is_valid(
    app_client: TestClient, admin_headers: dict[str, str]
) -> None:
    assert export(app_client, admin_headers, format="jsonl") == b""
    assert export(app_client, admin_headers, format="csv").decode().startswith("study_id,")
    table = pq.read_table(io.BytesIO(export(app_client, admin_headers, format="parquet")))
    assert table.num_rows == 0


def test_export_errors_are_problems(
    app_client: TestClient, admin_headers: dict[str, str], keys: Keys
) -> None:
    r = app_client.get(
        "/v1/admin/export", params={"study_id": "st_" + "1" * 24}, headers=admin_headers
    )
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    r = app_client.get("/v1/admin/export", params={"format": "xlsx"}, headers=admin_headers)
    assert r.status_code == 422
    r = app_client.get("/v1/admin/export", headers={"Authorization": f"Bearer {keys.client}"})
    assert r.status_code == 403


def test_large_export_streams_in_chunks(
    app_client: TestClient, admin_headers: dict[str, str], client, keys: Keys
) -> None:
    from tests.builders import params, study

    sid = client.create_study(study())["id"]
    batch = [
        {"params": params(lr=1e-4 + i * 1e-6), "result": {"metrics": {"val_loss": float(i)}}}
        for i in range(100)
    ]
    for _ in range(25):
        client.add_trials(sid, batch)
    with app_client.stream(
        "GET", "/v1/admin/export", params={"format": "jsonl"}, headers=admin_headers
    ) as r:
        chunks = [c for c in r.iter_raw() if c]
    assert sum(c.count(b"\n") for c in chunks) == 2500
    assert len(chunks) >= 3  # 1000 trials a chunk: the body never existed in one piece
