"""One suite, one run: our designers against Optuna's TPE and GPSampler on unseen problems.

``bench_optimizers.py`` measures the functions the engine was developed on. This suite
measures problems it was not tuned on (issue #18), each chosen for a property real
searches have, with the protocol fixed before any result was seen:

    hartmann6        Hartmann-6 (optimum -3.32237), the basin-stall check: 40 seeds,
                     stall = regret >= 0.1 at 60 evaluations (the second basin is at 0.119).
    hartmann6_in12   Hartmann-6 on 6 of 12 unit-interval coordinates, in a fixed shuffled
                     order; the other 6 are irrelevant.
    mixed_optim      four floats (log learning rate, momentum, warm-up, log weight decay), a
                     log-scaled int (batch size 8-1024) and a 3-way categorical (optimiser):
                     the best learning rate, batch size and weight decay depend on the
                     optimiser, and the learning rate follows the batch size.
    mixed_arch       a log int width (16-2048), a log int depth (1-64), dropout, a log learning
                     rate and two categoricals (4 activations, 3 normalisations): the best
                     depth depends on the normalisation, the best learning rate on the width,
                     and tanh gets worse with depth.
    permodule16      16 per-module learning-rate multipliers in [0.1, 10] (log): a convex
                     loss per module, steeper above its optimum, and a divergence region: a
                     run fails when one of the six most sensitive modules exceeds its
                     optimum by a fixed factor, or when the modules' summed overshoot is too
                     large. Optima lie just below the cliff, as the best learning rates of
                     real runs do. All multipliers at 1 (the tuned global rate) trains.
    noisy_levy5      Levy-5 on [-9, 5] with Gaussian noise (sd 0.3) on every observation; the
                     box is off-centre (optimum at 1) so starting at the centre gains nothing.

Budgets: 20, 40 and 60 evaluations (20, 40 and 50 for ``permodule16``), one evaluation at a
time, no pending trials. Seeds: ``--seeds`` (default 10) for every problem, ``--stall-seeds``
(default 40) for ``hartmann6``; every method runs every seed (seed ``s`` is the study seed
of ours and the sampler seed of Optuna's).

Methods: ``gp`` and ``local`` are built by ``engine.registry.make_designer`` and driven by
``update`` + ``suggest`` exactly as the service drives them; Optuna 5's ``TPESampler`` and
``GPSampler`` with default settings (greenlet must be importable, so GPSampler uses its
batched L-BFGS-B; the run refuses to start otherwise).

Ablation: ``--methods gp_basins`` runs ``gp`` with its opt-in basin restarts
(``GPOptions(basins=BasinOptions())``), registered under that name in the worker (the
designer is still built by ``make_designer``).

Failures: a diverged ``permodule16`` run is a failed trial. Ours receive it as the service
stores it, a trial in state ``infeasible``; Optuna's as ``TrialState.FAIL`` (how Optuna
records a crashed objective). Either way it spends one evaluation.

Regret: the true (noise-free) value of the best observed point so far minus the optimum;
before any run has succeeded, the regret of the all-lowest-multipliers point (which never
diverges). Ratios are ours' mean regret over a peer's, with a 95% paired bootstrap interval
over seeds.

Each finished run is appended to ``results/engine_suite_runs.jsonl``; a rerun reuses them
(``--rerun gp`` recomputes a method, ``--variant NAME`` files ours' runs under another
name so engine variants can be compared in one cache).

Usage::

    .venv/bin/python benchmarks/bench_engine_suite.py --procs 1            # everything
    .venv/bin/python benchmarks/bench_engine_suite.py --seeds 2 --stall-seeds 2 \\
        --problems mixed_optim --methods gp,optuna_tpe
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_optimizers import _hartmann6, _optuna_params

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("gp", "local", "optuna_tpe", "optuna_gp")
# Not run by default: ``gp`` with its opt-in basin restarts (``engine/basins.py``), for
# issue #18 item 3.
ABLATIONS = ("gp_basins",)
ALL_METHODS = (*METHODS, *ABLATIONS)
OURS = ("gp", "local", "gp_basins")
PEERS = ("optuna_tpe", "optuna_gp")
STALL_REGRET = 0.1
STALL_PROBLEMS = ("hartmann6", "hartmann6_in12")
PROBLEMS = (
    "hartmann6",
    "hartmann6_in12",
    "mixed_optim",
    "mixed_arch",
    "permodule16",
    "noisy_levy5",
)

Params = dict[str, Any]
Values = list[tuple[float | None, float | None]]
"""Per evaluation: (observed value, true value); both None where the run failed."""


@dataclass(frozen=True)
class SuiteProblem:
    """One problem: a space, a true objective, how observations differ from it.

    Attributes:
        name: the slug used on the command line and in results.
        space: the ``SearchSpace``.
        f: the true objective to minimise; None where the run diverges (fails).
        optimum: the true minimum.
        budgets: evaluations at which regret is reported; the run lasts the last one.
        noise_sd: sd of Gaussian noise on each observation (0: deterministic).
        fail_regret: regret reported while no run has succeeded.
    """

    name: str
    space: Any
    f: Callable[[Params], float | None]
    optimum: float
    budgets: tuple[int, ...] = (20, 40, 60)
    noise_sd: float = 0.0
    fail_regret: float = math.inf


# -- functions ----------------------------------------------------------------------------

# Hartmann-6 coordinate j is x[_ACTIVE[j]] of the 12; fixed before any run.
_ACTIVE = (9, 2, 5, 0, 11, 7)


def _hartmann6_in12(p: Params) -> float:
    return _hartmann6({f"x{j}": p[f"x{i}"] for j, i in enumerate(_ACTIVE)})


_OPT_LR = {"sgd": -1.0, "adam": -3.5, "adamw": -3.0}  # log10 lr at the best batch
_OPT_BATCH = {"sgd": 7.0, "adam": 5.0, "adamw": 6.0}  # log2 of the best batch
_OPT_WD = {"sgd": -4.0, "adam": -5.0, "adamw": -2.0}  # log10 of the best weight decay
_OPT_OFFSET = {"sgd": 0.25, "adam": 0.1, "adamw": 0.0}


def _mixed_optim(p: Params) -> float:
    c = str(p["opt"])
    log_batch = math.log2(int(p["batch"]))
    # The linear scaling rule: the best learning rate grows with the batch.
    lr_star = _OPT_LR[c] + 0.3 * (log_batch - _OPT_BATCH[c])
    momentum = 1.5 * (float(p["momentum"]) - 0.9) ** 2 if c == "sgd" else 0.0
    return (
        _OPT_OFFSET[c]
        + 0.5 * (math.log10(float(p["lr"])) - lr_star) ** 2
        + 0.08 * (log_batch - _OPT_BATCH[c]) ** 2
        + 0.08 * (math.log10(float(p["wd"])) - _OPT_WD[c]) ** 2
        + 2.0 * (float(p["warmup"]) - 0.1) ** 2
        + momentum
    )


_ACT_OFFSET = {"relu": 0.05, "gelu": 0.0, "tanh": 0.3, "silu": 0.02}
_NORM_OFFSET = {"none": 0.2, "batch": 0.05, "layer": 0.0}
_NORM_DEPTH = {"none": 2.0, "batch": 4.0, "layer": 3.0}  # log2 of the best depth


def _mixed_arch(p: Params) -> float:
    act, norm = str(p["act"]), str(p["norm"])
    log_width, log_depth = math.log2(int(p["width"])), math.log2(int(p["depth"]))
    # Wider nets want smaller learning rates (as under standard parametrisation).
    lr_star = -2.5 - 0.25 * (log_width - 9.0)
    tanh_depth = 0.05 * log_depth if act == "tanh" else 0.0
    return (
        _ACT_OFFSET[act]
        + _NORM_OFFSET[norm]
        + tanh_depth
        + 0.06 * (log_depth - _NORM_DEPTH[norm]) ** 2
        + 0.03 * (log_width - 9.0) ** 2
        + 0.4 * (math.log10(float(p["lr"])) - lr_star) ** 2
        + 1.0 * (float(p["dropout"]) - 0.1) ** 2
    )


def _permodule_constants() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-module optima (log10), sensitivities and cliff distances, fixed by one seed."""
    rng = np.random.default_rng(18)
    centre = rng.uniform(-0.2, 0.5, 16)
    weight = np.exp(rng.uniform(math.log(0.05), math.log(1.0), 16))
    cliff = np.full(16, np.inf)
    sensitive = np.argsort(-weight)[:6]
    cliff[sensitive] = rng.uniform(0.25, 0.5, 6)
    return centre, weight, cliff


_PM_CENTRE, _PM_WEIGHT, _PM_CLIFF = _permodule_constants()
_PM_BASE = 2.0
_PM_OVERSHOOT = 0.6  # summed weighted overshoot (log10) past which a run diverges


def _permodule_loss(z: np.ndarray) -> float | None:
    u = z - _PM_CENTRE
    if (u > _PM_CLIFF).any() or float((_PM_WEIGHT * np.maximum(u, 0.0)).sum()) > _PM_OVERSHOOT:
        return None
    return float(_PM_BASE + (_PM_WEIGHT * np.where(u > 0, 2.0, 1.0) * u**2).sum())


def _permodule16(p: Params) -> float | None:
    return _permodule_loss(np.array([math.log10(float(p[f"m{i}"])) for i in range(16)]))


def _levy(p: Params) -> float:
    w = 1.0 + (np.array([float(p[f"x{i}"]) for i in range(5)]) - 1.0) / 4.0
    head = math.sin(math.pi * w[0]) ** 2
    mid = ((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2)).sum()
    tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return float(head + mid + tail)


def problems() -> dict[str, SuiteProblem]:
    """Every problem of the suite by name."""
    from hpo_service.domain import CategoricalParameter, FloatParameter, IntParameter, SearchSpace

    def cube(n: int, prefix: str = "x", low: float = 0.0, high: float = 1.0) -> Any:
        return SearchSpace(
            parameters=[FloatParameter(name=f"{prefix}{i}", low=low, high=high) for i in range(n)]
        )

    optim = SearchSpace(
        parameters=[
            FloatParameter(name="lr", low=1e-5, high=1.0, scale="log"),
            FloatParameter(name="momentum", low=0.0, high=0.99),
            FloatParameter(name="warmup", low=0.0, high=0.3),
            FloatParameter(name="wd", low=1e-6, high=0.1, scale="log"),
            IntParameter(name="batch", low=8, high=1024, scale="log"),
            CategoricalParameter(name="opt", choices=list(_OPT_LR)),
        ]
    )
    arch = SearchSpace(
        parameters=[
            IntParameter(name="width", low=16, high=2048, scale="log"),
            IntParameter(name="depth", low=1, high=64, scale="log"),
            FloatParameter(name="dropout", low=0.0, high=0.5),
            FloatParameter(name="lr", low=1e-4, high=0.1, scale="log"),
            CategoricalParameter(name="act", choices=list(_ACT_OFFSET)),
            CategoricalParameter(name="norm", choices=list(_NORM_OFFSET)),
        ]
    )
    modules = SearchSpace(
        parameters=[
            FloatParameter(name=f"m{i}", low=0.1, high=10.0, scale="log") for i in range(16)
        ]
    )
    safe = _permodule_loss(np.full(16, -1.0))
    assert safe is not None
    assert _permodule_loss(np.zeros(16)) is not None
    return {
        p.name: p
        for p in (
            SuiteProblem("hartmann6", cube(6), _hartmann6, -3.32237),
            SuiteProblem("hartmann6_in12", cube(12), _hartmann6_in12, -3.32237),
            SuiteProblem("mixed_optim", optim, _mixed_optim, 0.0),
            SuiteProblem("mixed_arch", arch, _mixed_arch, 0.0),
            SuiteProblem(
                "permodule16",
                modules,
                _permodule16,
                _PM_BASE,
                budgets=(20, 40, 50),
                fail_regret=safe - _PM_BASE,
            ),
            SuiteProblem("noisy_levy5", cube(5, low=-9.0, high=5.0), _levy, 0.0, noise_sd=0.3),
        )
    }


def _observe(
    problem: SuiteProblem, params: Params, seed: int, i: int
) -> tuple[float | None, float | None]:
    """(observed, true) value of evaluation ``i``; the noise depends on seed and i only."""
    true = problem.f(params)
    if true is None or problem.noise_sd == 0:
        return true, true
    noise = float(np.random.default_rng([seed, i, 18]).normal(0.0, problem.noise_sd))
    return true + noise, true


# -- one run ------------------------------------------------------------------------------


def _register_ablations() -> None:
    from hpo_service.domain import StudyConfig
    from hpo_service.engine.basins import BasinOptions
    from hpo_service.engine.gp import GPDesigner, GPOptions
    from hpo_service.engine.registry import register

    def restarting(config: StudyConfig, seed: int | None) -> GPDesigner:
        return GPDesigner(config, seed, GPOptions(basins=BasinOptions()))

    register("gp_basins", restarting)


def _run_ours(problem: SuiteProblem, method: str, seed: int) -> Values:
    """Drive a registered designer the way the service does, one trial at a time."""
    from hpo_service.domain import Objective, StudyConfig, Trial, TrialState
    from hpo_service.engine.gp_model import default_cache
    from hpo_service.engine.registry import make_designer

    if method in ABLATIONS:
        _register_ablations()

    default_cache().clear()  # no warm start carried over from the previous run
    config = StudyConfig(
        space=problem.space, objective=Objective(metric="y"), algorithm=method, seed=seed
    )
    trials: list[Any] = []
    out: Values = []
    for i in range(problem.budgets[-1]):
        designer = make_designer(config, seed)
        designer.update(trials, [])
        (s,) = designer.suggest(1)
        observed, true = _observe(problem, s.params, seed, i)
        out.append((observed, true))
        failed = observed is None
        trials.append(
            Trial(
                id=str(i),
                study_id="suite",
                number=i,
                params=s.params,
                state=TrialState.INFEASIBLE if failed else TrialState.COMPLETED,
                result=None if failed else {"y": observed},
            )
        )
    return out


def _run_optuna(problem: SuiteProblem, method: str, seed: int) -> Values:
    import optuna
    from optuna._gp import batched_lbfgsb

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if method == "optuna_gp" and not batched_lbfgsb._greenlet_imports.is_successful():
        raise RuntimeError("greenlet is unavailable: GPSampler would fall back to sequential")
    sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if method == "optuna_tpe"
        else optuna.samplers.GPSampler(seed=seed)
    )
    study = optuna.create_study(sampler=sampler)
    out: Values = []
    for i in range(problem.budgets[-1]):
        trial = study.ask()
        observed, true = _observe(problem, _optuna_params(problem.space, trial), seed, i)
        out.append((observed, true))
        if observed is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, observed)
    return out


def regret_curve(problem: SuiteProblem, values: Values) -> list[float]:
    """Regret after each evaluation: the true value at the best observation so far."""
    curve: list[float] = []
    best_observed, best_true = math.inf, None
    for observed, true in values:
        if observed is not None and observed < best_observed:
            best_observed, best_true = observed, true
        regret = problem.fail_regret if best_true is None else best_true - problem.optimum
        curve.append(max(0.0, float(regret)))
    return curve


def _task(args: tuple[str, str, int, str, str]) -> dict[str, Any]:
    """One run in a worker process (one torch thread)."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    name, method, seed, variant, engine = args
    problem = problems()[name]
    t0 = time.perf_counter()
    run = _run_optuna if method in PEERS else _run_ours
    values = run(problem, method, seed)
    return {
        "problem": name,
        "method": method,
        "seed": seed,
        "variant": variant if method in OURS else "",
        "engine": engine if method in OURS else "",
        "regret": regret_curve(problem, values),
        "failed": sum(1 for v, _ in values if v is None),
        "seconds": time.perf_counter() - t0,
    }


def engine_fingerprint() -> str:
    """A hash of the engine's sources, stored with each of ours' runs."""
    digest = hashlib.sha256()
    engine = Path(__file__).resolve().parents[1] / "hpo_service" / "engine"
    for path in sorted(engine.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# -- cache --------------------------------------------------------------------------------


def _key(run: dict[str, Any]) -> tuple[str, str, int, str]:
    return run["problem"], run["method"], run["seed"], run["variant"]


def load_runs(path: Path) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    """The latest run per (problem, method, seed, variant) in the JSONL cache."""
    runs: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                run = json.loads(line)
                runs[_key(run)] = run
    return runs


# -- report -------------------------------------------------------------------------------


def _bootstrap_ratio(a: np.ndarray, b: np.ndarray, draws: int = 2000) -> tuple[float, float]:
    """95% interval of mean(a) / mean(b), resampling seeds (pairs) with replacement."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(a), (draws, len(a)))
    num, den = a[idx].mean(axis=1), b[idx].mean(axis=1)
    ratios = num[den > 0] / den[den > 0]
    if len(ratios) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def summarise(runs: list[dict[str, Any]], suite: dict[str, SuiteProblem]) -> dict[str, Any]:
    """Mean regret per problem, budget and method; ratios of ours to peers; stall rates.

    Only the seeds every method present finished count (a partial run compares like with
    like); ``seeds`` lists them and ``unpaired_seeds`` what was left out per method.
    """
    table: dict[str, Any] = {}
    for name, problem in suite.items():
        found = {
            m: {r["seed"]: r for r in runs if r["problem"] == name and r["method"] == m}
            for m in ALL_METHODS
        }
        found = {m: seeds for m, seeds in found.items() if seeds}
        common = set.intersection(*(set(s) for s in found.values())) if found else set()
        by_method = {
            m: {k: r for k, r in seeds.items() if k in common} for m, seeds in found.items()
        }
        entry: dict[str, Any] = {
            "seeds": sorted(common),
            "unpaired_seeds": {m: len(s) - len(common) for m, s in found.items()},
            "budgets": {},
            "stall": {},
            "failed": {},
        }
        for b in problem.budgets:
            row: dict[str, Any] = {}
            for m, seeds in by_method.items():
                if seeds:
                    vals = np.array([r["regret"][b - 1] for r in seeds.values()])
                    row[m] = {
                        "mean": float(vals.mean()),
                        "sem": float(vals.std() / math.sqrt(len(vals))),
                        "n": len(vals),
                    }
            ratios: dict[str, Any] = {}
            for ours in OURS:
                for peer in PEERS:
                    if not common or ours not in by_method or peer not in by_method:
                        continue
                    a = np.array([by_method[ours][s]["regret"][b - 1] for s in sorted(common)])
                    c = np.array([by_method[peer][s]["regret"][b - 1] for s in sorted(common)])
                    ratio = float(a.mean() / c.mean()) if c.mean() > 0 else math.nan
                    lo, hi = _bootstrap_ratio(a, c)
                    ratios[f"{ours}/{peer}"] = {
                        "ratio": ratio,
                        "lo": lo,
                        "hi": hi,
                        "n": len(common),
                    }
            entry["budgets"][str(b)] = {"mean": row, "ratios": ratios}
        last = problem.budgets[-1]
        for m, seeds in by_method.items():
            if seeds:
                stalled = sum(r["regret"][last - 1] >= STALL_REGRET for r in seeds.values())
                entry["stall"][m] = {"stalled": int(stalled), "n": len(seeds)}
                entry["failed"][m] = float(np.mean([r["failed"] for r in seeds.values()]))
        table[name] = entry
    return table


def print_table(table: dict[str, Any]) -> None:
    """Mean regret per budget, then ours' ratios to each peer with intervals."""
    for name, entry in table.items():
        left = ", ".join(f"{m} {k}" for m, k in entry["unpaired_seeds"].items() if k)
        print(
            f"\n{name}: mean regret (n) over the {len(entry['seeds'])} seeds every method"
            f" finished" + (f" (left out: {left})" if left else "")
        )
        methods = [m for m in ALL_METHODS if m in entry["stall"]]
        print(f"{'budget':>7} " + " ".join(f"{m:>17}" for m in methods))
        for b, cell in entry["budgets"].items():
            row = cell["mean"]
            print(
                f"{b:>7} "
                + " ".join(
                    f"{row[m]['mean']:>11.4g} ({row[m]['n']:>2})" if m in row else f"{'-':>17}"
                    for m in methods
                )
            )
        for b, cell in entry["budgets"].items():
            parts = [
                f"{k} {v['ratio']:.2f} [{v['lo']:.2f}, {v['hi']:.2f}]"
                for k, v in cell["ratios"].items()
            ]
            print(f"  ratios @{b}: " + "; ".join(parts))
        if name in STALL_PROBLEMS:
            stalls = ", ".join(f"{m} {s['stalled']}/{s['n']}" for m, s in entry["stall"].items())
            print(f"  stalled (regret >= {STALL_REGRET} at the last budget): {stalls}")
        if any(entry["failed"].values()):
            fails = ", ".join(f"{m} {v:.1f}" for m, v in entry["failed"].items())
            print(f"  mean failed runs per study: {fails}")


def markdown_table(table: dict[str, Any]) -> str:
    """The summary as the Markdown table ``benchmarks/README.md`` shows."""
    methods = [m for m in ALL_METHODS if any(m in e["stall"] for e in table.values())]
    peers = [p for p in PEERS if p in methods]
    head = ["problem", "evals", *methods, *(f"gp / {p}" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in table.items():
        for b, cell in entry["budgets"].items():
            means = [
                f"{cell['mean'][m]['mean']:.3g}" if m in cell["mean"] else "-" for m in methods
            ]
            ratios = []
            for peer in peers:
                r = cell["ratios"].get(f"gp/{peer}")
                ratios.append(f"{r['ratio']:.2f} ({r['lo']:.2f}-{r['hi']:.2f})" if r else "-")
            lines.append("| " + " | ".join([name, b, *means, *ratios]) + " |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], suite: dict[str, SuiteProblem], path: Path) -> None:
    """Mean regret against evaluations, one panel per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in suite if any(r["problem"] == n for r in runs)]
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.5 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for method in ALL_METHODS:
            curves = [r["regret"] for r in runs if r["problem"] == name and r["method"] == method]
            if not curves:
                continue
            arr = np.array(curves)
            mean = arr.mean(axis=0)
            sem = arr.std(axis=0) / math.sqrt(len(arr))
            steps = np.arange(1, arr.shape[1] + 1)
            ax.plot(steps, np.maximum(mean, 1e-6), label=f"{method} ({len(arr)})")
            ax.fill_between(steps, np.maximum(mean - sem, 1e-6), mean + sem, alpha=0.2)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("evaluations")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("mean regret")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- main ---------------------------------------------------------------------------------


def _tasks(
    args: argparse.Namespace, done: set[tuple[str, str, int, str]], engine: str
) -> list[tuple[str, str, int, str, str]]:
    """Runs still to do, seed by seed, so partial results cover every problem."""
    names = args.problems.split(",")
    methods = args.methods.split(",")
    rerun = set(args.rerun.split(",")) if args.rerun else set()
    most = max(args.stall_seeds, args.seeds)
    out = []
    for seed in range(most):
        for name in names:
            if seed >= (args.stall_seeds if name == "hartmann6" else args.seeds):
                continue
            for m in methods:
                variant = args.variant if m in OURS else ""
                if (name, m, seed, variant) in done and m not in rerun:
                    continue
                out.append((name, m, seed, variant, engine))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10, help="seeds per problem")
    parser.add_argument("--stall-seeds", type=int, default=40, help="seeds for hartmann6")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--procs", type=int, default=1, help="worker processes")
    parser.add_argument("--variant", default="default", help="label of ours' engine variant")
    parser.add_argument("--rerun", default="", help="methods to recompute despite the cache")
    parser.add_argument("--out", default=str(RESULTS / "engine_suite.json"))
    parser.add_argument("--cache", default=str(RESULTS / "engine_suite_runs.jsonl"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    cache = Path(args.cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    suite = {n: p for n, p in problems().items() if n in args.problems.split(",")}
    engine = engine_fingerprint()
    cached = load_runs(cache)
    tasks = [] if args.report_only else _tasks(args, set(cached), engine)
    print(f"{len(tasks)} runs to do ({len(cached)} cached), engine {engine}", flush=True)

    def selected() -> list[dict[str, Any]]:
        want_seeds = {n: args.stall_seeds if n == "hartmann6" else args.seeds for n in suite}
        return [
            r
            for r in cached.values()
            if r["problem"] in suite
            and r["seed"] < want_seeds[r["problem"]]
            and r["method"] in args.methods.split(",")
            and r["variant"] in ("", args.variant)
        ]

    def save() -> None:
        runs = selected()
        payload = {
            "meta": {
                "variant": args.variant,
                "engine": engine,
                "seeds": args.seeds,
                "stall_seeds": args.stall_seeds,
                "budgets": {n: list(p.budgets) for n, p in suite.items()},
                "cpu_count": os.cpu_count(),
                "python": sys.version.split()[0],
            },
            "summary": summarise(runs, suite),
            "runs": runs,
        }
        out.write_text(json.dumps(payload, indent=1))

    start = time.perf_counter()
    if tasks:
        with mp.get_context("spawn").Pool(args.procs) as pool, cache.open("a") as log:
            for i, run in enumerate(pool.imap(_task, tasks), start=1):
                log.write(json.dumps(run) + "\n")
                log.flush()
                cached[_key(run)] = run
                if i % 5 == 0 or i == len(tasks):
                    save()
                elapsed = time.perf_counter() - start
                print(
                    f"[{i}/{len(tasks)}] {run['problem']:<15} {run['method']:<10} seed "
                    f"{run['seed']:>2}: regret {run['regret'][-1]:.4g} ({run['seconds']:.0f} s)"
                    f"  elapsed {elapsed / 60:.1f} min,"
                    f" ETA {elapsed / i * (len(tasks) - i) / 60:.1f} min",
                    flush=True,
                )
    save()
    runs = selected()
    print_table(summarise(runs, suite))
    print("\n" + markdown_table(summarise(runs, suite)))
    plot(runs, suite, out.with_suffix(".png"))
    print(f"\nwrote {out}, {out.with_suffix('.png')} and {cache}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
