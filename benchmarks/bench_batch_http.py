"""Batch mode through the HTTP API: does asking with work in flight cost regret?

A real server (``python -m hpo_service serve``, SQLite, this checkout) runs the ``gp``
designer on Hartmann-6. Workers are threads with their own HTTP clients that loop
``suggest`` → evaluate → ``complete`` until the study's ``max_trials`` is used up:

- ``sequential``: one worker, so every suggestion sees the whole history;
- ``async4``: four workers at once, so a suggestion sees up to three pending trials
  (qLogNEI treats them as pending points);
- ``q4``: one worker that asks for four trials per request (one joint q-batch) and
  reports all four before asking again.

Evaluations are instant, so the workers keep the server as busy as it can be: the
hardest case for batching, because every request finds the others' trials pending.
Regret is the best value among the first k trials in the order they were created,
minus the optimum. Each answer's source is counted: fresh designer points, points the
pool precomputed (``pooled``) and ``fallback_random``.

Usage::

    .venv/bin/python benchmarks/bench_batch_http.py                     # 5 seeds, budget 60
    .venv/bin/python benchmarks/bench_batch_http.py --seeds 2 --budget 30 --modes async4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_optimizers import _hartmann6  # noqa: E402

from hpo_service.client import HPOClient  # noqa: E402
from tests import local_server  # noqa: E402

RESULTS = Path(__file__).parent / "results"
OPTIMUM = -3.32237
MODES = {"sequential": (1, 1), "async4": (4, 1), "q4": (1, 4)}  # workers, count per request
SPACE = {
    "parameters": [{"name": f"x{i}", "type": "float", "low": 0.0, "high": 1.0} for i in range(6)]
}


class Server:
    """A throwaway ``hpo serve`` (it migrates first) on a fresh SQLite database."""

    def __init__(self, workdir: Path) -> None:
        self.port = local_server.free_port()
        self.key = f"hpo_key_{secrets.token_hex(12)}_{secrets.token_hex(32)}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HPO_BOOTSTRAP_ADMIN_KEY": self.key,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        db = workdir / "hpo.db"
        argv = local_server.serve_argv(self.port, database_url=f"sqlite:///{db}")
        self.proc = local_server.launch(argv, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            local_server.wait_until_up(
                self.proc, f"{self.url}/readyz", timeout=120, request_timeout=5, interval=0.3
            )
        except local_server.ServerStartError as exc:
            self.close()
            raise RuntimeError("server did not start") from exc

    def client(self) -> HPOClient:
        return HPOClient(self.url, self.key, timeout=600)

    def close(self) -> None:
        local_server.stop_process(self.proc, sig=signal.SIGTERM, grace=30)


def run_mode(server: Server, mode: str, seed: int, budget: int) -> dict[str, Any]:
    """One study driven by the mode's workers; returns its trials in creation order."""
    n_workers, count = MODES[mode]
    with server.client() as c:
        sid = c.create_study(
            {
                "name": f"h6-{mode}-{seed}",
                "objective": {"metric": "y", "goal": "minimize"},
                "space": SPACE,
                "algorithm": "gp",
                "seed": seed,
                "max_trials": budget,
            }
        )["id"]
    rows: list[dict[str, Any]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        wid = f"{mode}-{seed}-w{i}"
        try:
            with server.client() as c:
                while True:
                    t0 = time.perf_counter()
                    got = c.suggest(sid, wid, count)["trials"]
                    wait = time.perf_counter() - t0
                    if not got:
                        return
                    for t in got:
                        y = _hartmann6(t["params"])
                        c.complete(t["id"], wid, {"y": y})
                        meta = t.get("metadata") or {}
                        source = (
                            "fallback_random"
                            if t["source"] == "fallback_random"
                            else ("pooled" if meta.get("pooled") else "fresh")
                        )
                        with lock:
                            rows.append(
                                {"number": t["number"], "y": y, "source": source, "wait_s": wait}
                            )
        except BaseException as exc:  # surfaced below, after the other workers stop
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    rows.sort(key=lambda r: r["number"])
    regret = np.minimum.accumulate([r["y"] for r in rows]) - OPTIMUM
    sources = [r["source"] for r in rows]
    return {
        "mode": mode,
        "seed": seed,
        "regret": [max(0.0, float(v)) for v in regret],
        "sources": {k: sources.count(k) for k in ("fresh", "pooled", "fallback_random")},
        "wait_p50_s": float(np.median([r["wait_s"] for r in rows])),
        "seconds": time.perf_counter() - start,
    }


def summarise(runs: list[dict[str, Any]], checkpoints: list[int]) -> dict[str, Any]:
    """Mean and standard error of regret per mode and checkpoint, plus ratios to sequential."""
    table: dict[str, Any] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        table[mode] = {}
        for k in checkpoints:
            vals = [r["regret"][k - 1] for r in mine if len(r["regret"]) >= k]
            if vals:
                table[mode][str(k)] = {
                    "mean": float(np.mean(vals)),
                    "sem": float(np.std(vals) / math.sqrt(len(vals))),
                    "n": len(vals),
                }
    seq = table.get("sequential", {})
    for row in table.values():
        for k, cell in row.items():
            base = seq.get(k, {}).get("mean")
            cell["ratio_to_sequential"] = cell["mean"] / base if base else None
    return table


def print_table(table: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    print("\nHartmann-6 through the HTTP API: mean simple regret (ratio to sequential)")
    checkpoints = sorted({int(k) for row in table.values() for k in row})
    print(f"{'mode':>11} " + " ".join(f"{'@' + str(k):>18}" for k in checkpoints) + "  sources")
    for mode, row in table.items():
        cells = []
        for k in checkpoints:
            c = row.get(str(k))
            ratio = c and c["ratio_to_sequential"]
            cells.append(
                f"{c['mean']:>9.4f} ({ratio:.2f}x)" if c and ratio else f"{c['mean']:>18.4f}"
            )
        totals = {
            s: sum(r["sources"][s] for r in runs if r["mode"] == mode) for s in runs[0]["sources"]
        }
        print(f"{mode:>11} " + " ".join(f"{c:>18}" for c in cells) + f"  {totals}")


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for mode in MODES:
        curves = [r["regret"] for r in runs if r["mode"] == mode]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        arr = np.array([c[:n] for c in curves])
        mean, sem = arr.mean(0), arr.std(0) / math.sqrt(len(arr))
        steps = np.arange(1, n + 1)
        workers, count = MODES[mode]
        ax.plot(steps, np.maximum(mean, 1e-6), label=f"{mode} ({workers} worker(s), q={count})")
        ax.fill_between(steps, np.maximum(mean - sem, 1e-6), mean + sem, alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("trials (creation order)")
    ax.set_ylabel("mean simple regret")
    ax.set_title("Hartmann-6, gp via HTTP API")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", default=str(RESULTS / "optimizers_batch_http.json"))
    parser.add_argument("--fresh", action="store_true", help="ignore earlier results in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    if out.exists() and not args.fresh:
        runs = [r for r in json.loads(out.read_text())["runs"] if len(r["regret"]) >= args.budget]
    done = {(r["mode"], r["seed"]) for r in runs}
    plan = [(m, s) for s in range(args.seeds) for m in args.modes.split(",") if (m, s) not in done]
    checkpoints = [k for k in (10, 20, 30, 40, 60, 100) if k <= args.budget]
    print(f"{len(plan)} runs to do ({len(done)} reused), budget {args.budget}", flush=True)

    def save() -> None:
        payload = {
            "meta": {"budget": args.budget, "seeds": args.seeds, "cpu_count": os.cpu_count()},
            "runs": runs,
            "summary": summarise(runs, checkpoints),
        }
        out.write_text(json.dumps(payload, indent=1))

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            for i, (mode, seed) in enumerate(plan, start=1):
                result = run_mode(server, mode, seed, args.budget)
                runs.append(result)
                save()
                elapsed = time.perf_counter() - start
                print(
                    f"[{i}/{len(plan)}] {mode:<10} seed {seed}: regret {result['regret'][-1]:.4g} "
                    f"{result['sources']} ({result['seconds']:.0f} s)  elapsed {elapsed:.0f} s, "
                    f"ETA {elapsed / i * (len(plan) - i):.0f} s",
                    flush=True,
                )
        finally:
            server.close()
    save()
    print_table(summarise(runs, checkpoints), runs)
    plot(runs, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
