"""Load benchmark: simulated workers against `hpo serve`, with a bare endpoint as baseline.

For each backend (SQLite, PostgreSQL), server process count (1, 4) and number of closed-loop
clients N (1, 8, 64), clients run lease → heartbeat → measurement → complete loops for a
fixed time. The bare FastAPI + SQLAlchemy insert endpoint (benchmarks/bare_app.py) runs
under the same conditions in the same run, so the figures that matter are ratios:
report/heartbeat throughput ≥ 0.5× the bare endpoint's, p99 ≤ 2× (issue 8 targets), and
p99 of report < 50 ms with 8 clients on PostgreSQL with 4 processes.

    .venv/bin/python benchmarks/bench_load.py [--seconds 8] [--clients 1,8,64] [--quick]

Prints a table and writes benchmarks/results/bench_load.json and bench_load.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from hpo_service.db.base import utcnow  # noqa: E402
from hpo_service.db.database import Database  # noqa: E402
from hpo_service.db.migrate import upgrade_to_head  # noqa: E402
from hpo_service.domain import Role  # noqa: E402
from hpo_service.services import api_keys  # noqa: E402

PG_ADMIN = os.environ.get(
    "HPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SPACE = {"parameters": [{"name": f"x{i}", "type": "float", "low": 0, "high": 1} for i in range(6)]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_database(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'load-{secrets.token_hex(4)}.db'}"
    name = f"hpo_bench_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    if url.startswith("sqlite"):
        return
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def wait_up(url: str, proc: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(url)


def start_service(db_url: str, workers: int, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env["HPO_LOG_LEVEL"] = "warning"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpo_service",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--database-url",
            db_url,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_up(f"http://127.0.0.1:{port}", proc, "/healthz")
    return proc


def start_bare(db_url: str, workers: int, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BARE_DATABASE_URL=db_url, PYTHONPATH=str(ROOT / "benchmarks"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:create",
            "--factory",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_up(f"http://127.0.0.1:{port}", proc, "/docs")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


async def run_workers(
    base: str, key: str, sid: str, n: int, seconds: float
) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = defaultdict(list)
    headers = {"Authorization": f"Bearer {key}"}
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as http:

        async def timed(name: str, path: str, body: dict) -> httpx.Response:
            t0 = time.perf_counter()
            r = await http.post(path, json=body)
            lat[name].append(time.perf_counter() - t0)
            if r.status_code >= 400:
                lat["errors"].append(1.0)
            return r

        async def worker(i: int) -> None:
            wid = f"w{i}"
            while time.perf_counter() < end:
                r = await timed(
                    "lease", f"/v1/studies/{sid}/suggestions", {"worker_id": wid, "count": 1}
                )
                trials = r.json().get("trials", []) if r.status_code == 200 else []
                if not trials:
                    await asyncio.sleep(0.05)
                    continue
                tid = trials[0]["id"]
                await timed("heartbeat", f"/v1/trials/{tid}/heartbeat", {"worker_id": wid})
                for step in range(3):
                    await timed(
                        "report",
                        f"/v1/trials/{tid}/measurements",
                        {"worker_id": wid, "step": step, "metrics": {"loss": 1.0 / (step + 1)}},
                    )
                await timed(
                    "complete",
                    f"/v1/trials/{tid}/complete",
                    {"worker_id": wid, "metrics": {"loss": float(i)}},
                )

        await asyncio.gather(*(worker(i) for i in range(n)))
    return lat


async def run_hammer(
    base: str, key: str, sid: str, n: int, seconds: float, endpoint: str
) -> dict[str, list[float]]:
    """Each client leases one trial, then only reports (or heartbeats) on it, closed loop.

    This is the like-for-like comparison with the bare insert endpoint: one small write
    per request, nothing else in the loop.
    """
    lat: dict[str, list[float]] = defaultdict(list)
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as http:
        leased = []
        for i in range(n):
            r = await http.post(
                f"/v1/studies/{sid}/suggestions", json={"worker_id": f"h{i}", "count": 1}
            )
            leased.append(r.json()["trials"][0]["id"])
        end = time.perf_counter() + seconds

        async def client(i: int) -> None:
            step = 0
            while time.perf_counter() < end:
                step += 1
                if endpoint == "report":
                    path, body = (
                        f"/v1/trials/{leased[i]}/measurements",
                        {"worker_id": f"h{i}", "step": step, "metrics": {"loss": 1.0}},
                    )
                else:
                    path, body = f"/v1/trials/{leased[i]}/heartbeat", {"worker_id": f"h{i}"}
                t0 = time.perf_counter()
                r = await http.post(path, json=body)
                lat[endpoint].append(time.perf_counter() - t0)
                if r.status_code >= 400:
                    lat["errors"].append(1.0)

        await asyncio.gather(*(client(i) for i in range(n)))
    return lat


async def run_bare(base: str, n: int, seconds: float) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = defaultdict(list)
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:

        async def client(i: int) -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                await http.post("/insert", json={"worker_id": f"w{i}", "value": 1.0})
                lat["insert"].append(time.perf_counter() - t0)

        await asyncio.gather(*(client(i) for i in range(n)))
    return lat


def summarise(lat: dict[str, list[float]], seconds: float) -> dict[str, dict[str, float]]:
    out = {}
    for name, values in lat.items():
        if name == "errors":
            continue
        arr = np.array(values) * 1000
        out[name] = {
            "rps": len(values) / seconds,
            "p50_ms": float(np.percentile(arr, 50)),
            "p99_ms": float(np.percentile(arr, 99)),
            "n": len(values),
        }
    out["errors"] = {"n": float(len(lat.get("errors", [])))}
    return out


def one_config(
    backend: str, workers: int, clients: list[int], algorithm: str, seconds: float, tmp: Path
) -> list[dict]:
    rows = []
    db_url = fresh_database(backend, tmp)
    bare_url = fresh_database(backend, tmp)
    try:
        db = Database(db_url)
        upgrade_to_head(db.engine)
        key = api_keys.create_key(db, role=Role.ADMIN, tenant="bench", now=utcnow()).key
        db.dispose()
        port, bare_port = free_port(), free_port()
        service, bare = (
            start_service(db_url, workers, port),
            start_bare(bare_url, workers, bare_port),
        )
        try:
            for n in clients:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/v1/studies",
                    headers={"Authorization": f"Bearer {key}"},
                    json={
                        "name": "load",
                        "objective": {"metric": "loss"},
                        "space": SPACE,
                        "algorithm": algorithm,
                        "seed": 0,
                    },
                    timeout=60,
                )
                sid = r.json()["id"]
                base_url = f"http://127.0.0.1:{port}"
                svc = summarise(asyncio.run(run_workers(base_url, key, sid, n, seconds)), seconds)
                for ep in ("report", "heartbeat"):
                    hammer = summarise(
                        asyncio.run(run_hammer(base_url, key, sid, n, seconds, ep)), seconds
                    )
                    svc[f"{ep}_only"] = hammer[ep]
                    svc["errors"]["n"] += hammer["errors"]["n"]
                base = summarise(
                    asyncio.run(run_bare(f"http://127.0.0.1:{bare_port}", n, seconds)), seconds
                )["insert"]
                row = {
                    "backend": backend,
                    "processes": workers,
                    "clients": n,
                    "algorithm": algorithm,
                    "service": svc,
                    "bare_insert": base,
                }
                for ep in ("report", "heartbeat"):
                    only = svc[f"{ep}_only"]
                    row[f"{ep}_rps_ratio"] = only["rps"] / base["rps"]
                    row[f"{ep}_p99_ratio"] = only["p99_ms"] / base["p99_ms"]
                rows.append(row)
                rep = svc["report_only"]
                print(
                    f"  {backend:8s} procs={workers} N={n:3d} {algorithm:6s} "
                    f"report {rep['rps']:7.0f} rps p50 {rep['p50_ms']:6.1f} "
                    f"p99 {rep['p99_ms']:7.1f} ms | bare {base['rps']:7.0f} rps "
                    f"p99 {base['p99_ms']:7.1f} ms | ratio rps "
                    f"{row.get('report_rps_ratio', 0):.2f} p99 {row.get('report_p99_ratio', 0):.2f}"
                    f" | errors {svc['errors']['n']:.0f}",
                    flush=True,
                )
        finally:
            stop(service)
            stop(bare)
    finally:
        drop_database(db_url)
        drop_database(bare_url)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (backend, procs, algo), group in _groups(rows).items():
        xs = [r["clients"] for r in group]
        label = f"{backend}, {procs} proc, {algo}"
        axes[0].plot(
            xs, [r.get("report_rps_ratio", np.nan) for r in group], marker="o", label=label
        )
        axes[1].plot(
            xs, [r.get("report_p99_ratio", np.nan) for r in group], marker="o", label=label
        )
    axes[0].axhline(0.5, color="grey", ls="--")
    axes[1].axhline(2.0, color="grey", ls="--")
    axes[0].set(
        xscale="log",
        xlabel="concurrent clients",
        ylabel="report rps / bare insert rps",
        title="Throughput ratio (target ≥ 0.5)",
    )
    axes[1].set(
        xscale="log",
        xlabel="concurrent clients",
        ylabel="report p99 / bare insert p99",
        title="p99 ratio (target ≤ 2)",
    )
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[(r["backend"], r["processes"], r["algorithm"])].append(r)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--processes", default="1,4")
    parser.add_argument("--algorithms", default="random,gp")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    configs = [
        (b, int(p), a)
        for b in args.backends.split(",")
        for p in args.processes.split(",")
        for a in args.algorithms.split(",")
    ]
    rows: list[dict] = []
    t0 = time.monotonic()
    for i, (backend, procs, algo) in enumerate(configs):
        eta = (time.monotonic() - t0) / i * (len(configs) - i) if i else float("nan")
        print(
            f"[{i + 1}/{len(configs)}] {backend} processes={procs} algorithm={algo} "
            f"(ETA {eta:.0f} s)",
            flush=True,
        )
        cl = clients if algo == "random" else [c for c in clients if c <= 8]
        rows += one_config(backend, procs, cl, algo, args.seconds, tmp)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "seconds": args.seconds,
        "cpu_count": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    (RESULTS / "bench_load.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    plot(rows, RESULTS / "bench_load.png")
    print(f"\nwrote {RESULTS / 'bench_load.json'} and bench_load.png")


if __name__ == "__main__":
    main()
