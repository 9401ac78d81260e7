"""Suggestion latency vs history size and dimension, against Optuna's GPSampler.

Each cell (method, d, n) runs in its own subprocess so that its peak memory can be read
from ``ru_maxrss`` and caches cannot leak between cells. A cell builds a history of ``n``
completed trials of a smooth function on ``[0, 1]^d`` plus 8 pending (running) trials,
makes one untimed request to warm up (our hyperparameter cache, Optuna's GP cache), then
times ``--repeats`` requests; before each one a new completed trial is added, so every
timed request refits the model to new data ("fresh" suggestions, no pool):

- ours: build the ``gp`` designer, ``update(completed, pending)``, ``suggest(1)``;
- Optuna: ``study.ask(distributions)`` on an in-memory study holding the same trials.

Both run with one torch thread (Optuna's GPSampler limits itself to one as well). The
ratio column is ours / Optuna's p50 in the same run; Optuna is skipped above
``--optuna-max-n`` (its exact GP has no training cap: O(n^3) time and O(n^2 d) memory).

The pool-backed path is measured too, at the largest n (``--no-pool`` skips it):
requests go through ``SuggestionPool`` with a deadline, as the service runs them,
back to back (each reported at once: the hardest case for a pool), and every answer is
counted as fresh (the designer answered in time), pooled (precomputed in the
background) or a ``fallback_random`` point.

Repeats are fewer from n = 3000 on (``--large-repeats``) to keep the run short.

Usage::

    .venv/bin/python benchmarks/bench_latency.py
    .venv/bin/python benchmarks/bench_latency.py --ns 20,300 --ds 12 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Run against this checkout even when another copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"
N_PENDING = 8


def _f(x: np.ndarray) -> np.ndarray:
    return np.sin(3 * x).sum(-1) + 0.5 * ((x - 0.3) ** 2).sum(-1)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cell_ours(d: int, n: int, repeats: int) -> dict[str, Any]:
    from hpo_service.domain import (
        FloatParameter,
        Objective,
        SearchSpace,
        StudyConfig,
        Trial,
        TrialState,
    )
    from hpo_service.engine.registry import make_designer

    space = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0, high=1) for i in range(d)])
    config = StudyConfig(space=space, objective=Objective(metric="y"), algorithm="gp", seed=0)
    rng = np.random.default_rng(d * 100003 + n)
    xs = rng.random((n + repeats + N_PENDING, d))
    ys = _f(xs)
    trials = [
        Trial(
            id=str(i),
            study_id="b",
            number=i,
            params={f"x{j}": float(v) for j, v in enumerate(x)},
            state=TrialState.COMPLETED,
            result={"y": float(y)},
        )
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
    ]
    pending = [
        Trial(
            id=f"p{i}",
            study_id="b",
            number=10**6 + i,
            params=trials[-1 - i].params,
            state=TrialState.ACTIVE,
        )
        for i in range(N_PENDING)
    ]
    base = _rss_mb()

    def request(k: int) -> float:
        t0 = time.perf_counter()
        designer = make_designer(config, 0)
        designer.update(trials[:k], pending)
        designer.suggest(1)
        return time.perf_counter() - t0

    request(n - 1)
    times = [request(n + r) for r in range(repeats)]
    return {"times": times, "peak_mb": _rss_mb() - base, "rss_mb": _rss_mb()}


def _cell_optuna(d: int, n: int, repeats: int) -> dict[str, Any]:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    dists = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(d)}
    rng = np.random.default_rng(d * 100003 + n)
    xs = rng.random((n + repeats + N_PENDING, d))
    ys = _f(xs)
    study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=0))
    study.add_trials(
        [
            create_trial(
                params={f"x{j}": float(v) for j, v in enumerate(xs[i])},
                distributions=dists,
                value=float(ys[i]),
            )
            for i in range(n - 1)
        ]
    )
    for i in range(N_PENDING):
        x = xs[-1 - i]
        study.add_trial(
            create_trial(
                params={f"x{j}": float(v) for j, v in enumerate(x)},
                distributions=dists,
                state=TrialState.RUNNING,
            )
        )
    base = _rss_mb()

    def request() -> float:
        t0 = time.perf_counter()
        trial = study.ask(dists)
        elapsed = time.perf_counter() - t0
        x = np.array([trial.params[f"x{j}"] for j in range(d)])
        study.tell(trial, float(_f(x)))
        return elapsed

    request()
    times = [request() for _ in range(repeats)]
    return {"times": times, "peak_mb": _rss_mb() - base, "rss_mb": _rss_mb()}


def _cell_pool(d: int, n: int, repeats: int, deadline_s: float) -> dict[str, Any]:
    from hpo_service.domain import (
        FloatParameter,
        Objective,
        SearchSpace,
        StudyConfig,
        Trial,
        TrialState,
    )
    from hpo_service.engine.pool import PoolSettings, SuggestionPool, designer_compute
    from hpo_service.engine.registry import make_designer

    space = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0, high=1) for i in range(d)])
    config = StudyConfig(space=space, objective=Objective(metric="y"), algorithm="gp", seed=0)
    rng = np.random.default_rng(7)
    xs = rng.random((n + N_PENDING, d))
    ys = _f(xs)
    completed = [
        Trial(
            id=str(i),
            study_id="b",
            number=i,
            params={f"x{j}": float(v) for j, v in enumerate(x)},
            state=TrialState.COMPLETED,
            result={"y": float(y)},
        )
        for i, (x, y) in enumerate(zip(xs[:n], ys[:n], strict=True))
    ]
    pending = [
        Trial(
            id=f"p{i}",
            study_id="b",
            number=10**6 + i,
            params={f"x{j}": float(v) for j, v in enumerate(x)},
            state=TrialState.ACTIVE,
        )
        for i, x in enumerate(xs[n:])
    ]
    pool = SuggestionPool(PoolSettings(deadline_s=deadline_s, workers=1))
    times: list[float] = []
    sources: list[str] = []
    try:
        for r in range(repeats + 1):
            compute = designer_compute(
                lambda: make_designer(config, 0), list(completed), list(pending)
            )
            t0 = time.perf_counter()
            (s,) = pool.suggest(
                "study", 1, compute, space, pending=[t.params for t in pending], seed=0
            )
            elapsed = time.perf_counter() - t0
            if r:  # the first request only warms the cache
                times.append(elapsed)
                sources.append(
                    "fallback_random"
                    if s.source == "fallback_random"
                    else ("pooled" if s.metadata.get("pooled") else "fresh")
                )
            # The oldest pending trial completes; the new suggestion becomes pending.
            done = pending.pop(0)
            x = np.array([float(done.params[f"x{j}"]) for j in range(d)])
            completed.append(
                Trial(
                    id=f"c{r}",
                    study_id="b",
                    number=len(completed),
                    params=done.params,
                    state=TrialState.COMPLETED,
                    result={"y": float(_f(x))},
                )
            )
            pending.append(
                Trial(
                    id=f"q{r}",
                    study_id="b",
                    number=2 * 10**6 + r,
                    params=s.params,
                    state=TrialState.ACTIVE,
                )
            )
    finally:
        pool.close()
    fallback = sum(1 for s in sources if s == "fallback_random")
    return {
        "times": times,
        "fallback_share": fallback / max(1, len(sources)),
        "sources": {k: sources.count(k) for k in ("fresh", "pooled", "fallback_random")},
    }


def _run_cell(
    args: list[str],
    timeout_s: float,
    *,
    script: str = __file__,
    env: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """Run ``script --cell ARGS`` in a fresh process; its last stdout line is the JSON result.

    ``script`` and ``env`` let other benchmarks (``bench_device.py``) run their own cells
    the same way, e.g. with the GPU hidden. None on a timeout or a crash.
    """
    try:
        proc = subprocess.run(
            [sys.executable, script, "--cell", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        print(f"  cell {' '.join(args)}: timed out after {timeout_s:.0f} s", flush=True)
        return None
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def cell_process_setup() -> None:
    """One torch thread (as Optuna's GPSampler limits itself to) and no warnings on stdout.

    Every cell process of the latency benchmarks starts with this, so both peers run
    with the same thread count.
    """
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ns", default="20,100,300,1000,3000,10000")
    parser.add_argument("--ds", default="4,12,24")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--large-repeats", type=int, default=3, help="timed requests per cell from n=3000 on"
    )
    parser.add_argument("--optuna-max-n", type=int, default=1000)
    parser.add_argument("--cell-timeout", type=float, default=900.0)
    parser.add_argument("--no-pool", action="store_true", help="skip the pool-backed path")
    parser.add_argument("--pool-deadline", type=float, default=1.5)
    parser.add_argument("--pool-repeats", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS / "latency.json"))
    parser.add_argument("--cell", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.cell:
        cell_process_setup()
        kind, d, n, repeats = args.cell[0], int(args.cell[1]), int(args.cell[2]), int(args.cell[3])
        if kind == "ours":
            result = _cell_ours(d, n, repeats)
        elif kind == "optuna":
            result = _cell_optuna(d, n, repeats)
        else:
            result = _cell_pool(d, n, repeats, float(args.cell[4]))
        print(json.dumps(result))
        return 0

    ns = [int(v) for v in args.ns.split(",")]
    ds = [int(v) for v in args.ds.split(",")]
    cells: list[dict[str, Any]] = []
    plan = [
        (d, n, kind)
        for d in ds
        for n in ns
        for kind in ("ours", "optuna")
        if kind == "ours" or n <= args.optuna_max_n
    ]
    start = time.perf_counter()
    for i, (d, n, kind) in enumerate(plan, start=1):
        repeats = args.repeats if n < 3000 else args.large_repeats
        result = _run_cell([kind, str(d), str(n), str(repeats)], args.cell_timeout)
        cell = {"method": kind, "d": d, "n": n, "pending": N_PENDING}
        if result is None:
            cell["skipped"] = "timed out or failed"
        else:
            cell |= {
                "p50_s": _pct(result["times"], 50),
                "p95_s": _pct(result["times"], 95),
                "times": result["times"],
                "peak_mb": result["peak_mb"],
                "rss_mb": result["rss_mb"],
            }
        cells.append(cell)
        elapsed = time.perf_counter() - start
        print(
            f"[{i}/{len(plan)}] {kind:<6} d={d:<3} n={n:<6} "
            + (
                f"p50 {cell['p50_s']:.3f} s p95 {cell['p95_s']:.3f} s "
                f"peak +{cell['peak_mb']:.0f} MB"
                if "p50_s" in cell
                else cell.get("skipped", "")
            )
            + f"  elapsed {elapsed:.0f} s, ETA {elapsed / i * (len(plan) - i):.0f} s",
            flush=True,
        )
    pool_cells: list[dict[str, Any]] = []
    if not args.no_pool:
        for d in ds:
            n = max(ns)
            result = _run_cell(
                ["pool", str(d), str(n), str(args.pool_repeats), str(args.pool_deadline)],
                args.cell_timeout,
            )
            if result is not None:
                pool_cells.append(
                    {
                        "d": d,
                        "n": n,
                        "deadline_s": args.pool_deadline,
                        "p50_s": _pct(result["times"], 50),
                        "p95_s": _pct(result["times"], 95),
                        "fallback_share": result["fallback_share"],
                        "sources": result["sources"],
                        "times": result["times"],
                    }
                )
                print(
                    f"pool d={d} n={n}: p50 {pool_cells[-1]['p50_s']:.3f} s "
                    f"p95 {pool_cells[-1]['p95_s']:.3f} s "
                    f"fallback {100 * result['fallback_share']:.0f}% {result['sources']}",
                    flush=True,
                )
    rows = []
    for d in ds:
        for n in ns:
            ours = next(c for c in cells if c["method"] == "ours" and c["d"] == d and c["n"] == n)
            theirs = next(
                (c for c in cells if c["method"] == "optuna" and c["d"] == d and c["n"] == n), None
            )
            ratio = (
                (ours["p50_s"] / theirs["p50_s"])
                if theirs and "p50_s" in theirs and "p50_s" in ours
                else None
            )
            rows.append({"d": d, "n": n, "ours": ours, "optuna": theirs, "ratio_p50": ratio})
    print(
        f"\n{'d':>3} {'n':>6} | {'ours p50':>9} {'p95':>7} {'MB':>6} | "
        f"{'optuna p50':>10} {'p95':>7} {'MB':>6} | ratio"
    )
    for r in rows:
        o, t = r["ours"], r["optuna"]
        ours_s = (
            f"{o['p50_s']:>9.3f} {o['p95_s']:>7.3f} {o['peak_mb']:>6.0f}"
            if "p50_s" in o
            else f"{'skipped':>24}"
        )
        their_s = (
            f"{t['p50_s']:>10.3f} {t['p95_s']:>7.3f} {t['peak_mb']:>6.0f}"
            if t and "p50_s" in t
            else f"{'skipped':>25}"
        )
        ratio = f"{r['ratio_p50']:.2f}" if r["ratio_p50"] is not None else "-"
        print(f"{r['d']:>3} {r['n']:>6} | {ours_s} | {their_s} | {ratio}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "meta": {
                    "repeats": args.repeats,
                    "large_repeats": args.large_repeats,
                    "cpu_count": os.cpu_count(),
                    "pending": N_PENDING,
                    "optuna_max_n": args.optuna_max_n,
                },
                "rows": rows,
                "pool": pool_cells,
            },
            indent=1,
        )
    )
    _plot(rows, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = sorted({r["d"] for r in rows})
    fig, axes = plt.subplots(1, len(ds), figsize=(4.2 * len(ds), 3.6), squeeze=False)
    for ax, d in zip(axes[0], ds, strict=True):
        for key, label in (("ours", "gp (ours)"), ("optuna", "Optuna GPSampler")):
            pts = [
                (r["n"], r[key]["p50_s"], r[key]["p95_s"])
                for r in rows
                if r["d"] == d and r[key] and "p50_s" in r[key]
            ]
            if pts:
                n, p50, p95 = zip(*pts, strict=True)
                ax.plot(n, p50, marker="o", label=f"{label} p50")
                ax.plot(n, p95, linestyle="--", alpha=0.6, label=f"{label} p95")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"d = {d}, {N_PENDING} pending")
        ax.set_xlabel("completed trials n")
    axes[0][0].set_ylabel("seconds per suggestion")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
