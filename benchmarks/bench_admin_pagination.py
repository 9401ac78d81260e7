"""Admin history at scale: keyset page latency over 100k trials on PostgreSQL.

Creates a scratch database on the server at ``HPO_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), migrates it, bulk-inserts ``--trials``
trials over ``--studies`` studies of four tenants, runs ANALYZE, then times
``services.history.list_trials`` (the exact code behind ``GET /v1/admin/trials``):

- a full walk of every page for each ordering and several filters;
- the streamed JSONL and CSV exports of everything.

Writes ``benchmarks/results/admin_pagination.json`` and ``admin_pagination.png`` (page
latency against page index: flat lines mean deep pages cost what the first one does).
The scratch database is dropped at the end.

    .venv/bin/python benchmarks/bench_admin_pagination.py                # 100k trials
    .venv/bin/python benchmarks/bench_admin_pagination.py --trials 20000 --page-size 100
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database, normalize_url
from hpo_service.db.migrate import upgrade_to_head
from hpo_service.db.models import MeasurementRow, StudyRow, TrialRow
from hpo_service.db.repositories import TrialFilter
from hpo_service.domain import Principal, Role
from hpo_service.services import export, history

RESULTS = Path(__file__).parent / "results"
PG = os.environ.get("HPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ADMIN = Principal(key_id="bench", role=Role.ADMIN, tenant="ops")
STATES = ["completed"] * 6 + ["failed", "infeasible", "requested", "active"]


def seed(db: Database, n_trials: int, n_studies: int) -> list[str]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    study_ids = [f"st_{secrets.token_hex(12)}" for _ in range(n_studies)]
    space = {
        "parameters": [
            {"name": "lr", "type": "float", "low": 1e-5, "high": 1e-1, "scale": "log"},
            {"name": "width", "type": "int", "low": 64, "high": 1024},
        ]
    }
    with db.write() as session:
        session.execute(
            insert(StudyRow),
            [
                {
                    "id": sid,
                    "tenant": f"tenant{i % 4}",
                    "name": f"study-{i}",
                    "family": f"family{i % 5}",
                    "objective": {"metric": "loss", "goal": "minimize"},
                    "space": space,
                    "algorithm": "random",
                    "max_attempts": 3,
                    "meta": {},
                    "state": "active",
                    "next_number": 0,
                    "created_at": t0,
                    "updated_at": t0,
                }
                for i, sid in enumerate(study_ids)
            ],
        )
    batch: list[dict[str, Any]] = []
    measurements: list[dict[str, Any]] = []
    numbers = dict.fromkeys(study_ids, 0)
    for n in range(n_trials):
        sid = study_ids[n % n_studies]
        state = STATES[n % len(STATES)]
        created = t0 + timedelta(seconds=n)
        tid = f"tr_{secrets.token_hex(12)}"
        done = state in ("completed", "failed", "infeasible")
        batch.append(
            {
                "id": tid,
                "study_id": sid,
                "number": numbers[sid],
                "params": {"lr": 10 ** (-5 + 4 * (n % 97) / 97), "width": 64 + n % 960},
                "state": state,
                "source": "engine",
                "worker_id": None if state == "requested" else f"w{n % 64}",
                "attempt": 1,
                "value": (n % 1000) / 1000 if state == "completed" else None,
                "result": {"metrics": {"loss": (n % 1000) / 1000}}
                if state == "completed"
                else None,
                "meta": {},
                "created_at": created,
                "started_at": created,
                "finished_at": created + timedelta(seconds=60 + n % 300) if done else None,
            }
        )
        numbers[sid] += 1
        if state == "completed":
            measurements.append(
                {"trial_id": tid, "step": 100, "metrics": {"loss": 1.0}, "at": created}
            )
        if len(batch) == 5000:
            with db.write() as session:
                session.execute(insert(TrialRow), batch)
                session.execute(insert(MeasurementRow), measurements)
            batch, measurements = [], []
    if batch:
        with db.write() as session:
            session.execute(insert(TrialRow), batch)
            if measurements:
                session.execute(insert(MeasurementRow), measurements)
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return study_ids


def walk(db: Database, flt: TrialFilter, order_by: Any, page_size: int) -> dict[str, Any]:
    times, rows, token = [], 0, None
    while True:
        start = time.perf_counter()
        page = history.list_trials(
            db, ADMIN, flt, order_by=order_by, page_size=page_size, page_token=token
        )
        times.append((time.perf_counter() - start) * 1000)
        rows += len(page.items)
        token = page.next_page_token
        if token is None:
            break
    ordered = sorted(times)
    return {
        "pages": len(times),
        "rows": rows,
        "first_ms": round(times[0], 2),
        "last_ms": round(times[-1], 2),
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
        "per_page_ms": [round(t, 2) for t in times],
    }


def time_export(db: Database, fmt: Any) -> dict[str, Any]:
    start = time.perf_counter()
    result = export.history_stream(db, ADMIN, fmt=fmt, study_id=None, now=utcnow())
    size = sum(len(chunk) for chunk in result.chunks)
    seconds = time.perf_counter() - start
    return {"format": fmt, "bytes": size, "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()

    name = f"hpo_bench_{secrets.token_hex(4)}"
    server = create_engine(normalize_url(PG), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(normalize_url(PG)).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    try:
        upgrade_to_head(db.engine)
        start = time.perf_counter()
        study_ids = seed(db, args.trials, args.studies)
        print(f"seeded {args.trials} trials in {time.perf_counter() - start:.1f}s")
        cases: list[tuple[str, TrialFilter, str]] = [
            ("all, created_at", TrialFilter(), "created_at"),
            ("all, -created_at", TrialFilter(), "-created_at"),
            ("all, -finished_at", TrialFilter(), "-finished_at"),
            ("state=failed", TrialFilter(state="failed"), "created_at"),
            ("tenant=tenant1", TrialFilter(tenant="tenant1"), "created_at"),
            ("family=family2", TrialFilter(family="family2"), "-created_at"),
            ("worker_id=w7", TrialFilter(worker_id="w7"), "created_at"),
            ("one study", TrialFilter(study_id=study_ids[3]), "created_at"),
        ]
        results: dict[str, Any] = {
            "trials": args.trials,
            "studies": args.studies,
            "page_size": args.page_size,
            "backend": "postgresql",
            "walks": {},
        }
        for label, flt, order_by in cases:
            stats = walk(db, flt, order_by, args.page_size)
            results["walks"][label] = stats
            print(
                f"{label:22s} pages={stats['pages']:5d} rows={stats['rows']:6d} "
                f"first={stats['first_ms']:7.2f}ms median={stats['median_ms']:7.2f}ms "
                f"p95={stats['p95_ms']:7.2f}ms last={stats['last_ms']:7.2f}ms"
            )
        results["exports"] = [time_export(db, fmt) for fmt in ("jsonl", "csv", "parquet")]
        for e in results["exports"]:
            print(f"export {e['format']:8s} {e['bytes'] / 1e6:8.1f} MB in {e['seconds']:.2f}s")
    finally:
        db.dispose()
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "admin_pagination.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "admin_pagination.png")
    print(f"wrote {RESULTS / 'admin_pagination.json'} and admin_pagination.png")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for label, stats in results["walks"].items():
        ax.plot(stats["per_page_ms"], label=label, linewidth=0.8)
    ax.set_xlabel(f"page index (page size {results['page_size']})")
    ax.set_ylabel("latency of list_trials (ms)")
    ax.set_yscale("log")
    ax.set_title(f"Admin history keyset pages, {results['trials']:,} trials on PostgreSQL")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
