"""Which basin of Hartmann-6 does a GP optimiser end in, and what decides it?

``bench_optimizers.py`` found that ``gp`` ends in Hartmann-6's second-best basin (value
-3.2032, regret 0.119) on 6 of seeds 0-9 where Optuna's GPSampler did so on 1, while over 30
seeds the two stall about equally often. This benchmark separates the initial design from
the optimiser: for every seed it draws two initial designs of 10 points, a scrambled Sobol
design (what ``gp`` uses) and independent uniform points (what GPSampler's startup
``RandomSampler`` uses), and runs both optimisers from each of them. The 10 points are
evaluated first and given to the optimiser as history (enqueued trials for Optuna), so
within a seed and a design the two optimisers start from identical data.

Each run is classified by the basin its best point ends in, from the final regret: ``global``
(< 0.01), ``second`` (0.10-0.13, the -3.203 basin), ``third`` (0.17-0.20, the -3.137 basin)
or ``other``. The table gives the count per arm, the mean regret at 20/40/60, and, per
design, on how many seeds the two optimisers agree on global-or-not.

    .venv/bin/python benchmarks/bench_hartmann_basins.py --seeds 10 --workers 2

Writes ``results/hartmann_basins.json`` and ``.png`` (stall counts per arm, and the paired
outcome per seed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
N_INITIAL = 10
OPTIMISERS = ("gp", "optuna_gp")
DESIGNS = ("sobol", "random")
BUDGETS = (20, 40, 60)


def initial_design(design: str, seed: int) -> np.ndarray:
    """Ten points in the unit cube: scrambled Sobol or independent uniform, seeded."""
    if design == "sobol":
        from scipy.stats import qmc

        # The same points as gp's own initial design (SobolDesigner seeds the scramble
        # with the study seed and starts at the beginning of the sequence).
        return np.asarray(qmc.Sobol(d=6, scramble=True, seed=seed).random(N_INITIAL))
    return np.random.default_rng([seed, 6]).random((N_INITIAL, 6))


def basin(regret: float) -> str:
    """The Hartmann-6 basin a final regret belongs to."""
    if regret < 0.01:
        return "global"
    if 0.10 <= regret <= 0.13:
        return "second"
    if 0.17 <= regret <= 0.20:
        return "third"
    return "other"


def _params(x: np.ndarray) -> dict[str, float]:
    return {f"x{i}": float(v) for i, v in enumerate(x)}


def _task(args: tuple[str, str, int, int]) -> dict[str, Any]:
    import bench_optimizers

    optimiser, design, seed, budget = args
    initial = [_params(x) for x in initial_design(design, seed)]
    run = bench_optimizers._task(("hartmann6", optimiser, seed, budget), initial)
    return {
        "optimiser": optimiser,
        "design": design,
        "seed": seed,
        "regret": run["regret"],
        "basin": basin(run["regret"][-1]),
        "seconds": run["seconds"],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per basin, mean regret per budget, and paired agreement per design."""
    arms: dict[str, Any] = {}
    for o in OPTIMISERS:
        for d in DESIGNS:
            rs = [r for r in runs if r["optimiser"] == o and r["design"] == d]
            if not rs:
                continue
            arms[f"{o}/{d}"] = {
                "n": len(rs),
                "basins": {
                    b: sum(r["basin"] == b for r in rs)
                    for b in ("global", "second", "third", "other")
                },
                "mean_regret": {
                    str(b): float(np.mean([r["regret"][b - 1] for r in rs]))
                    for b in BUDGETS
                    if b <= min(len(r["regret"]) for r in rs)
                },
            }
    paired: dict[str, Any] = {}
    for d in DESIGNS:
        by = {(r["optimiser"], r["seed"]): r["basin"] == "global" for r in runs if r["design"] == d}
        seeds = sorted({s for (_, s) in by if ("gp", s) in by and ("optuna_gp", s) in by})
        if seeds:
            paired[d] = {
                "seeds": len(seeds),
                "agree": sum(by[("gp", s)] == by[("optuna_gp", s)] for s in seeds),
                "both_stall": sum(not by[("gp", s)] and not by[("optuna_gp", s)] for s in seeds),
            }
    return {"arms": arms, "paired": paired}


def print_table(summary: dict[str, Any]) -> None:
    print(
        f"\n{'arm':<20} {'n':>3} {'global':>7} {'second':>7} {'third':>6} {'other':>6}   "
        + "  ".join(f"mean@{b:<3}" for b in BUDGETS)
    )
    for arm, a in summary["arms"].items():
        b = a["basins"]
        print(
            f"{arm:<20} {a['n']:>3} {b['global']:>7} {b['second']:>7} {b['third']:>6} "
            f"{b['other']:>6}   "
            + "  ".join(f"{a['mean_regret'].get(str(x), float('nan')):<8.4f}" for x in BUDGETS)
        )
    for d, p in summary["paired"].items():
        print(
            f"{d} design: gp and GPSampler agree (global or not) on {p['agree']} of "
            f"{p['seeds']} seeds; both stall on {p['both_stall']}"
        )


def plot(runs: list[dict[str, Any]], summary: dict[str, Any], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    arms = list(summary["arms"])
    bottom = np.zeros(len(arms))
    for b, colour in zip(
        ("global", "second", "third", "other"),
        ("tab:green", "tab:orange", "tab:red", "grey"),
        strict=True,
    ):
        counts = np.array([summary["arms"][a]["basins"][b] for a in arms])
        ax1.bar(arms, counts, bottom=bottom, label=b, color=colour)
        bottom += counts
    ax1.set_ylabel("runs")
    ax1.set_title(f"basin after {budget} evaluations")
    ax1.legend(fontsize=8)
    ax1.tick_params(axis="x", labelsize=8, labelrotation=15)
    seeds = sorted({r["seed"] for r in runs})
    for j, (o, d) in enumerate((o, d) for d in DESIGNS for o in OPTIMISERS):
        for r in runs:
            if r["optimiser"] == o and r["design"] == d:
                ok = r["basin"] == "global"
                ax2.scatter(
                    r["seed"], j, marker="o" if ok else "x", color="tab:green" if ok else "tab:red"
                )
    ax2.set_yticks(range(4), [f"{o}/{d}" for d in DESIGNS for o in OPTIMISERS], fontsize=8)
    ax2.set_xticks(seeds)
    ax2.set_xlabel("seed (o: global basin, x: elsewhere)")
    ax2.set_title("paired outcomes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "hartmann_basins.json"))
    parser.add_argument(
        "--report-only", action="store_true", help="only print and plot what --out holds"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = json.loads(out.read_text())["runs"] if out.exists() else []
    done = {
        (r["optimiser"], r["design"], r["seed"]) for r in runs if len(r["regret"]) >= args.budget
    }
    tasks = [
        (o, d, s, args.budget)
        for s in range(args.seeds)
        for d in DESIGNS
        for o in OPTIMISERS
        if (o, d, s) not in done and not args.report_only
    ]
    print(f"{len(tasks)} runs to do ({len(done)} reused), budget {args.budget}", flush=True)
    start = time.perf_counter()

    def save() -> None:
        payload = {
            "meta": {"budget": args.budget, "n_initial": N_INITIAL},
            "runs": runs,
            "summary": summarise(runs),
        }
        out.write_text(json.dumps(payload, indent=1))

    with mp.get_context("spawn").Pool(args.workers) as pool:
        for i, result in enumerate(pool.imap_unordered(_task, tasks), start=1):
            runs.append(result)
            save()
            elapsed = time.perf_counter() - start
            print(
                f"[{i}/{len(tasks)}] {result['optimiser']:<9} {result['design']:<6} seed "
                f"{result['seed']:>2}: regret {result['regret'][-1]:.4g} ({result['basin']}, "
                f"{result['seconds']:.0f} s)  elapsed {elapsed:.0f} s, "
                f"ETA {elapsed / i * (len(tasks) - i):.0f} s",
                flush=True,
            )
    save()
    summary = summarise(runs)
    print_table(summary)
    plot(runs, summary, args.budget, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
