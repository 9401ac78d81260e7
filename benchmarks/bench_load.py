"""Load benchmark: simulated workers against `hpo serve`, with a bare endpoint as baseline.

For each backend (SQLite, PostgreSQL), server process count (1, 4), designer (random, gp)
and number of closed-loop clients N (1, 8, 64):

* full loop: N workers run lease → heartbeat → 3 measurements → complete, for the
  per-endpoint picture (lease includes the designer);
* like-for-like phases: N clients each hold one lease and only report (or only
  heartbeat), against the bare FastAPI + SQLAlchemy insert endpoint
  (benchmarks/bare_app.py) under the same process count and database. These give the
  ratios the issue sets targets on: report/heartbeat throughput ≥ 0.5× the bare
  endpoint's, p99 ≤ 2×, and report p99 < 50 ms with 8 clients on PostgreSQL with 4
  processes.

Fairness on a small, shared machine:

* the load generator is benchmarks/load_client.py (raw asyncio streams, pre-encoded
  requests: tens of µs per request instead of httpx's ~1 ms), so it takes little CPU
  from the servers; its CPU per request is measured and reported;
* the bare, report and heartbeat phases are interleaved in ``--rounds`` rounds (order
  rotated each round), each with a warm-up whose requests are not counted, so a change
  in the machine's background load hits all three alike;
* the machine's load is recorded: 1-minute load average and the busy CPU fraction with
  our processes idle (background, other users) and during each phase;
* ``--client-cpu``/``--server-cpus`` pin the generator and the servers with
  ``sched_setaffinity``/``taskset`` when wanted (off by default: on 2 cores, pinning
  either side to one core halves what it may use).

    .venv/bin/python benchmarks/bench_load.py [--seconds 1.5] [--warmup 0.5] [--rounds 4]
        [--clients 1,8,64] [--backends sqlite,postgres] [--processes 1,4]
        [--algorithms random,gp] [--out bench_load]

Prints a table and writes benchmarks/results/<out>.json and <out>.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from load_client import Connection
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from hpo_service.db.base import utcnow  # noqa: E402
from hpo_service.db.database import Database  # noqa: E402
from hpo_service.db.migrate import upgrade_to_head  # noqa: E402
from hpo_service.domain import Role  # noqa: E402
from hpo_service.services import api_keys  # noqa: E402
from tests.local_server import (  # noqa: E402
    LOCALHOST,
    free_port,
    launch,
    serve_argv,
    stop_process,
    wait_until_up,
)

PG_ADMIN = os.environ.get(
    "HPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SPACE = {"parameters": [{"name": f"x{i}", "type": "float", "low": 0, "high": 1} for i in range(6)]}
HOST = LOCALHOST
Latencies = dict[str, list[float]]


# --------------------------------------------------------------------------- machine load


@dataclass(frozen=True)
class CpuSample:
    """Machine-wide CPU ticks and this process's CPU time at one moment."""

    busy: int
    total: int
    own_cpu: float
    wall: float

    @staticmethod
    def now() -> CpuSample:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        total = sum(fields[:8])
        return CpuSample(total - idle, total, time.process_time(), time.perf_counter())

    def since(self, before: CpuSample) -> dict[str, float]:
        """Busy fraction of all cores and this process's share of one core in between."""
        ticks = max(self.total - before.total, 1)
        wall = max(self.wall - before.wall, 1e-9)
        return {
            "machine_busy": (self.busy - before.busy) / ticks,
            "client_cpu_s": self.own_cpu - before.own_cpu,
            "wall_s": wall,
        }


def background_load(seconds: float = 1.0) -> dict[str, float]:
    """The machine's load while our servers and generator sit idle (other users)."""
    before = CpuSample.now()
    time.sleep(seconds)
    return {"busy": CpuSample.now().since(before)["machine_busy"], "loadavg_1m": os.getloadavg()[0]}


# --------------------------------------------------------------------------- processes


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
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm", ".key-secret"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def wait_up(port: int, proc: subprocess.Popen[bytes], path: str) -> None:
    """Until ``path`` answers below 500 (the bare app has no health endpoint, only /docs)."""
    wait_until_up(
        proc, f"http://{HOST}:{port}{path}", timeout=180, healthy=lambda r: r.status_code < 500
    )


def _launch(argv: list[str], env: dict[str, str], cpus: str | None) -> subprocess.Popen[bytes]:
    prefix = ["taskset", "-c", cpus] if cpus else []
    return launch(prefix + argv, env=env, new_session=True)


def pool_size(workers: int) -> int:
    """Connections per server process: 4 processes × 2 apps must fit max_connections=100."""
    return 20 if workers == 1 else 6


def start_service(
    db_url: str, workers: int, port: int, cpus: str | None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env["HPO_LOG_LEVEL"] = "warning"
    env["HPO_DB_POOL_SIZE"] = str(pool_size(workers))
    proc = _launch(serve_argv(port, database_url=db_url, workers=workers), env, cpus)
    wait_up(port, proc, "/healthz")
    return proc


def start_bare(db_url: str, workers: int, port: int, cpus: str | None) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        BARE_DATABASE_URL=db_url,
        BARE_POOL_SIZE=str(pool_size(workers)),
        PYTHONPATH=os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)]),
    )
    argv = [sys.executable, str(ROOT / "benchmarks" / "bare_app.py"), "--port", str(port)]
    proc = _launch([*argv, "--workers", str(workers)], env, cpus)
    wait_up(port, proc, "/docs")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, sig=signal.SIGTERM, grace=20, group=True)


# --------------------------------------------------------------------------- load phases


class Window:
    """Counts only what starts after the warm-up and before the end of the phase."""

    def __init__(self, warmup: float, seconds: float) -> None:
        self.start = time.perf_counter() + warmup
        self.end = self.start + seconds
        self.lat: Latencies = defaultdict(list)

    def open(self) -> bool:
        return time.perf_counter() < self.end

    async def timed(self, conn: Connection, name: str, raw: bytes) -> Any:
        t0 = time.perf_counter()
        r = await conn.send(raw)
        self.lat["all"].append(1.0)  # warm-up included: the CPU-per-request denominator
        if t0 >= self.start:
            self.lat[name].append(time.perf_counter() - t0)
            if r.status >= 400:
                self.lat["errors"].append(1.0)
        return r


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def full_loop(
    port: int, key: str, sid: str, n: int, warmup: float, seconds: float, grace: float = 5.0
) -> Latencies:
    """N workers: lease → heartbeat → 3 measurements → complete, closed loop."""
    win = Window(warmup, seconds)

    async def worker(i: int) -> None:
        conn, wid = Connection(HOST, port, _auth(key)), f"w{i}"
        lease = conn.encode(f"/v1/studies/{sid}/suggestions", {"worker_id": wid, "count": 1})
        try:
            await loop_body(conn, wid, lease, i)
        finally:
            conn.abort()

    async def loop_body(conn: Connection, wid: str, lease: bytes, i: int) -> None:
        while win.open():
            r = await win.timed(conn, "lease", lease)
            trials = r.json().get("trials", []) if r.status == 200 else []
            if not trials:
                await asyncio.sleep(0.05)
                continue
            tid = trials[0]["id"]
            hb = conn.encode(f"/v1/trials/{tid}/heartbeat", {"worker_id": wid})
            await win.timed(conn, "heartbeat", hb)
            for step in range(3):
                body = {"worker_id": wid, "step": step, "metrics": {"loss": 1.0 / (step + 1)}}
                await win.timed(conn, "report", conn.encode(f"/v1/trials/{tid}/measurements", body))
            done = {"worker_id": wid, "metrics": {"loss": float(i)}}
            await win.timed(conn, "complete", conn.encode(f"/v1/trials/{tid}/complete", done))

    # A gp lease under 64 concurrent workers can take tens of seconds on a loaded
    # machine: requests still open ``grace`` seconds after the end are abandoned and
    # counted as cut off (they are not in the latency figures).
    tasks = [asyncio.create_task(worker(i)) for i in range(n)]
    _, pending = await asyncio.wait(tasks, timeout=warmup + seconds + grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    win.lat["cut_off"] = [1.0] * len(pending)
    return win.lat


async def lease_for_hammer(port: int, key: str, sid: str, n: int) -> list[str]:
    """Queue n trials and lease one to each hammer client (no designer call involved)."""
    conn = Connection(HOST, port, _auth(key))
    params = [{"params": {p["name"]: 0.5 for p in SPACE["parameters"]}} for _ in range(n)]
    r = await conn.post(f"/v1/studies/{sid}/trials:batch", {"trials": params})
    assert r.status == 201, r.body
    leased = []
    for i in range(n):
        r = await conn.post(f"/v1/studies/{sid}/suggestions", {"worker_id": f"h{i}", "count": 1})
        assert r.status == 200, r.body
        leased.append(r.json()["trials"][0]["id"])
    await conn.close()
    return leased


async def hammer(
    port: int, key: str, leased: list[str], endpoint: str, warmup: float, seconds: float
) -> Latencies:
    """Each client only reports (or heartbeats) on its own leased trial, closed loop.

    The like-for-like comparison with the bare insert endpoint: one small write per
    request, nothing else in the loop.
    """
    win = Window(warmup, seconds)

    async def client(i: int, tid: str) -> None:
        conn, wid = Connection(HOST, port, _auth(key)), f"h{i}"
        step = int(time.time() * 1000) % 1_000_000
        hb = conn.encode(f"/v1/trials/{tid}/heartbeat", {"worker_id": wid})
        while win.open():
            step += 1
            if endpoint == "report":
                body = {"worker_id": wid, "step": step, "metrics": {"loss": 1.0}}
                raw = conn.encode(f"/v1/trials/{tid}/measurements", body)
            else:
                raw = hb
            await win.timed(conn, endpoint, raw)
        await conn.close()

    await asyncio.gather(*(client(i, tid) for i, tid in enumerate(leased)))
    return win.lat


async def bare(port: int, n: int, warmup: float, seconds: float) -> Latencies:
    win = Window(warmup, seconds)

    async def client(i: int) -> None:
        conn = Connection(HOST, port)
        raw = conn.encode("/insert", {"worker_id": f"w{i}", "value": 1.0})
        while win.open():
            await win.timed(conn, "insert", raw)
        await conn.close()

    await asyncio.gather(*(client(i) for i in range(n)))
    return win.lat


def summarise(lat: Latencies, seconds: float) -> dict[str, dict[str, float]]:
    out = {}
    for name, values in lat.items():
        if name in ("errors", "cut_off", "all") or not values:
            continue
        arr = np.array(values) * 1000
        out[name] = {
            "rps": len(values) / seconds,
            "p50_ms": float(np.percentile(arr, 50)),
            "p99_ms": float(np.percentile(arr, 99)),
            "n": len(values),
        }
    out["errors"] = {"n": float(len(lat.get("errors", [])))}
    out["cut_off"] = {"n": float(len(lat.get("cut_off", [])))}
    return out


# --------------------------------------------------------------------------- one cell


@dataclass(frozen=True)
class Plan:
    seconds: float
    warmup: float
    rounds: int
    loop_seconds: float


def _post(port: int, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"http://{HOST}:{port}{path}", headers=_auth(key), json=body, timeout=60)
    r.raise_for_status()
    result: dict[str, Any] = r.json()
    return result


def _study(port: int, key: str, algorithm: str, name: str) -> str:
    body = {
        "name": name,
        "objective": {"metric": "loss"},
        "space": SPACE,
        "algorithm": algorithm,
        "seed": 0,
    }
    return str(_post(port, key, "/v1/studies", body)["id"])


def server_cpu_seconds(pgid: int) -> float:
    """CPU seconds used so far by every process of a server's process group."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by every PostgreSQL process (other users' queries too)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        if "(postgres)" in raw:
            fields = raw.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_idle(pgid: int, limit: float = 60.0) -> float:
    """Wait until the server stops working off abandoned requests; seconds waited.

    The client cannot cancel a request the server already runs (a gp suggestion goes on
    after the benchmark gave up on it), so the next phase waits until the server's
    processes use under a tenth of a core.
    """
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = server_cpu_seconds(pgid)
        time.sleep(0.5)
        if server_cpu_seconds(pgid) - before < 0.05:
            break
    return time.monotonic() - start


def measure_cell(
    ports: tuple[int, int], pgids: tuple[int, int], key: str, n: int, algorithm: str, plan: Plan
) -> dict[str, Any]:
    """``rounds`` rounds of the bare/report/heartbeat phases, then the full loop.

    ``ports`` and ``pgids`` name the service and the bare app, in that order.
    """
    (port, bare_port), (pgid, bare_pgid) = ports, pgids
    background = background_load()
    leased = asyncio.run(lease_for_hammer(port, key, _study(port, key, algorithm, f"h-{n}"), n))
    phases = ["insert", "report", "heartbeat"]
    lat: dict[str, Latencies] = {p: defaultdict(list) for p in phases}
    load: dict[str, list[dict[str, float]]] = {p: [] for p in phases}
    cpu: dict[str, list[float]] = {p: [0.0, 0.0, 0.0] for p in phases}  # server, pg, requests
    for r in range(plan.rounds):
        for phase in phases[r % 3 :] + phases[: r % 3]:
            t = CpuSample.now()
            group = bare_pgid if phase == "insert" else pgid
            s0, p0 = server_cpu_seconds(group), postgres_cpu_seconds()
            if phase == "insert":
                got = asyncio.run(bare(bare_port, n, plan.warmup, plan.seconds))
            else:
                got = asyncio.run(hammer(port, key, leased, phase, plan.warmup, plan.seconds))
            cpu[phase][0] += server_cpu_seconds(group) - s0
            cpu[phase][1] += postgres_cpu_seconds() - p0
            cpu[phase][2] += len(got.get("all", []))
            load[phase].append(CpuSample.now().since(t))
            for name, values in got.items():
                lat[phase][name].extend(values)
    # The full loop runs last: with gp, leases it abandons keep the server busy, and
    # wait_idle() lets that work finish before the next cell measures anything.
    sid = _study(port, key, algorithm, f"loop-{n}")
    t = CpuSample.now()
    loop_lat = asyncio.run(full_loop(port, key, sid, n, 1.0, plan.loop_seconds))
    loop = summarise(loop_lat, plan.loop_seconds)
    loop["machine_busy"] = CpuSample.now().since(t)["machine_busy"]
    loop["drain_s"] = wait_idle(pgid)
    total = plan.seconds * plan.rounds
    out: dict[str, Any] = {"full_loop": loop, "background": background}
    for phase in phases:
        s = summarise(lat[phase], total)
        out[phase] = {**s[phase], "errors": s["errors"]["n"]}
        busy = [x["machine_busy"] for x in load[phase]]
        spent = sum(x["client_cpu_s"] for x in load[phase])
        out[phase]["machine_busy"] = float(np.mean(busy))
        # generator CPU per request, warm-up requests included (they are not counted)
        wall = sum(x["wall_s"] for x in load[phase])
        out[phase]["client_us_per_req"] = 1e6 * spent / max(out[phase]["rps"] * wall, 1)
        # CPU per request of the server processes (and of PostgreSQL): unlike rates and
        # latencies, it hardly depends on how much CPU other users leave us.
        server_s, pg_s, requests = cpu[phase]
        out[phase]["server_cpu_ms_per_req"] = 1e3 * server_s / max(requests, 1)
        out[phase]["postgres_cpu_ms_per_req"] = 1e3 * pg_s / max(requests, 1)
    out["loadavg_1m_after"] = os.getloadavg()[0]
    return out


def one_config(
    backend: str,
    workers: int,
    clients: list[int],
    algorithm: str,
    plan: Plan,
    tmp: Path,
    server_cpus: str | None,
) -> list[dict[str, Any]]:
    rows = []
    db_url = fresh_database(backend, tmp)
    bare_url = fresh_database(backend, tmp)
    try:
        db = Database(db_url)
        upgrade_to_head(db.engine)
        key = api_keys.create_key(db, role=Role.ADMIN, tenant="bench", now=utcnow()).key
        db.dispose()
        port, bare_port = free_port(), free_port()
        service = start_service(db_url, workers, port, server_cpus)
        bare_proc = start_bare(bare_url, workers, bare_port, server_cpus)
        try:
            for n in clients:
                try:
                    cell = measure_cell(
                        (port, bare_port), (service.pid, bare_proc.pid), key, n, algorithm, plan
                    )
                except (OSError, asyncio.IncompleteReadError, AssertionError) as exc:
                    # a cell that breaks (a server out of connections, ...) is reported,
                    # not allowed to lose the cells already measured
                    print(f"  {backend} p={workers} N={n} {algorithm}: FAILED {exc!r}", flush=True)
                    rows.append(
                        {
                            "backend": backend,
                            "processes": workers,
                            "clients": n,
                            "algorithm": algorithm,
                            "failed": repr(exc),
                        }
                    )
                    continue
                row: dict[str, Any] = {
                    "backend": backend,
                    "processes": workers,
                    "clients": n,
                    "algorithm": algorithm,
                    **cell,
                }
                base = cell["insert"]
                for ep in ("report", "heartbeat"):
                    row[f"{ep}_cpu_ratio"] = (
                        cell[ep]["server_cpu_ms_per_req"] + cell[ep]["postgres_cpu_ms_per_req"]
                    ) / max(base["server_cpu_ms_per_req"] + base["postgres_cpu_ms_per_req"], 1e-9)
                    row[f"{ep}_rps_ratio"] = cell[ep]["rps"] / base["rps"]
                    row[f"{ep}_p99_ratio"] = cell[ep]["p99_ms"] / base["p99_ms"]
                rows.append(row)
                print_row(row)
        finally:
            stop(service)
            stop(bare_proc)
    finally:
        drop_database(db_url)
        drop_database(bare_url)
    return rows


def print_row(row: dict[str, Any]) -> None:
    rep, hb, base = row["report"], row["heartbeat"], row["insert"]
    lease = row["full_loop"].get("lease", {})
    errors = rep["errors"] + hb["errors"] + base["errors"] + row["full_loop"]["errors"]["n"]
    print(
        f"  {row['backend']:8s} p={row['processes']} N={row['clients']:3d} {row['algorithm']:6s}"
        f" | report {rep['rps']:6.0f}/s p99 {rep['p99_ms']:6.1f}"
        f" | hb {hb['rps']:6.0f}/s p99 {hb['p99_ms']:6.1f}"
        f" | bare {base['rps']:6.0f}/s p99 {base['p99_ms']:6.1f}"
        f" | ratio rps {row['report_rps_ratio']:.2f}/{row['heartbeat_rps_ratio']:.2f}"
        f" p99 {row['report_p99_ratio']:.2f}/{row['heartbeat_p99_ratio']:.2f}"
        f" | lease p50 {lease.get('p50_ms', float('nan')):6.1f}"
        f" cut {row['full_loop']['cut_off']['n']:.0f}"
        f" | cpu/req {rep['server_cpu_ms_per_req']:.2f}+{rep['postgres_cpu_ms_per_req']:.2f}"
        f"/{hb['server_cpu_ms_per_req']:.2f}+{hb['postgres_cpu_ms_per_req']:.2f}"
        f" bare {base['server_cpu_ms_per_req']:.2f}+{base['postgres_cpu_ms_per_req']:.2f} ms"
        f" | busy bg {row['background']['busy']:.2f} run {rep['machine_busy']:.2f}"
        f" load {row['loadavg_1m_after']:.1f} | client {rep['client_us_per_req']:.0f} µs/req"
        f" | errors {errors:.0f}",
        flush=True,
    )


# --------------------------------------------------------------------------- output


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for (backend, procs, algo), group in _groups(rows).items():
        xs = [r["clients"] for r in group]
        label = f"{backend}, {procs} proc, {algo}"
        axes[0].plot(xs, [r["report_rps_ratio"] for r in group], marker="o", label=label)
        axes[1].plot(xs, [r["report_p99_ratio"] for r in group], marker="o", label=label)
        axes[2].plot(xs, [r["report"]["p99_ms"] for r in group], marker="o", label=label)
    axes[0].axhline(0.5, color="grey", ls="--")
    axes[1].axhline(2.0, color="grey", ls="--")
    axes[2].axhline(50.0, color="grey", ls="--")
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
    axes[2].set(
        xscale="log",
        yscale="log",
        xlabel="concurrent clients",
        ylabel="report p99 (ms)",
        title="Report p99 (target < 50 ms: PG, 4 proc, 8 clients)",
    )
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    out: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[(r["backend"], r["processes"], r["algorithm"])].append(r)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.5, help="measured s per phase")
    parser.add_argument("--warmup", type=float, default=0.5, help="uncounted s per phase")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per cell")
    parser.add_argument("--loop-seconds", type=float, default=4.0, help="full-loop phase")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--processes", default="1,4")
    parser.add_argument("--algorithms", default="random,gp")
    parser.add_argument("--client-cpu", type=int, help="pin the load generator to this CPU")
    parser.add_argument("--server-cpus", help="taskset CPU list for the servers, e.g. 0")
    parser.add_argument("--out", default="bench_load", help="result file stem")
    args = parser.parse_args()
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    plan = Plan(args.seconds, args.warmup, args.rounds, args.loop_seconds)
    clients = [int(c) for c in args.clients.split(",")]
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    configs = [
        (b, int(p), a)
        for b in args.backends.split(",")
        for p in args.processes.split(",")
        for a in args.algorithms.split(",")
    ]
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    meta: dict[str, Any] = {
        **vars(args),
        "cpu_count": os.cpu_count(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_client": "benchmarks/load_client.py (raw asyncio HTTP/1.1, keep-alive)",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.out}.json"
    for i, (backend, procs, algo) in enumerate(configs):
        eta = (time.monotonic() - t0) / i * (len(configs) - i) if i else float("nan")
        print(
            f"[{i + 1}/{len(configs)}] {backend} processes={procs} algorithm={algo} "
            f"(ETA {eta:.0f} s, load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        rows += one_config(backend, procs, clients, algo, plan, tmp, args.server_cpus)
        meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))  # after every config
    plot([r for r in rows if "failed" not in r], RESULTS / f"{args.out}.png")
    print(f"\nwrote {out} and {args.out}.png")


if __name__ == "__main__":
    main()
