"""µTransfer benchmark: does the optimal learning rate stay put as width (and depth) grow?

Four parts, run in order (``--parts``):

- ``tune``: tunes the transformer's base multipliers (``mult.readout``, ``init_std.embedding``,
  ``init_std.readout``, with ``lr``) at the base width *through the service itself*: an
  in-process app on a temporary SQLite database, a µP study with the ``gp`` designer, then
  a second study with the ``local`` designer seeded with the first study's trials; every
  trial is leased with ``suggest``, trained with ``run_proxy`` and reported with
  ``complete`` (diverged runs ``infeasible``). The best values go to
  ``results/mutransfer_tuned.json``; the transformer sweep uses them (LR aside) for SP and
  µP alike, so both coincide at the base width.
- ``mlp``: MLP 32→w→w→10 (ReLU, no bias; one hidden matrix, TP5's MLP) on teacher–student
  data with fresh samples every step, SP vs µP, widths 64…512 (base 64).
- ``transformer``: 2-block pre-norm character transformer (QK-norm, head dim 32) on
  Python's standard-library sources, SP vs µP, widths 32…256 on CPU (``--tf-widths``).
- ``depth``: depths 2…16 (base 2), CompleteP (α=1: residual ×1/m_L, block LR and init
  unchanged, block ε ×1/m_L) vs an unscaled residual (µP without a depth rule). Default
  ``--depth-task transformer``: the character transformer of the width sweep (pre-norm,
  the setting CompleteP was shown in) at its base width 32 with its service-tuned base
  values, 256 tokens per step, 100 steps (as its width sweep), linear decay. The
  residual MLP tasks (``mlp_deep_teacher``: labels from a 6-layer tanh teacher;
  ``mlp_chars``; ``mlp_residual``) remain selectable; on them the loss barely moves with
  depth (deep teacher 1.415→1.394) or worsens (``mlp_chars``), which leaves the
  optimum to noise.

Protocol: Adam(W), a fixed step count and batch, the same batches for every LR (data seed =
seed), ``--seeds`` seeds, ``--points`` LRs per curve on a half-octave log2 grid centred
near the optimum. The centres come from a one-seed, one-octave probe at the smallest and
the largest scale (interpolated in log scale between them), so every curve's grid brackets
its own optimum. Optimum per curve = vertex of the parabola through the best grid point of
the seed-mean loss and its two neighbours (log2 LR); per-seed optima give the spread.
Drift = optimum at the largest scale minus at the smallest, in octaves.

Outputs ``results/mutransfer_<part>.json`` and ``.png`` (loss vs log2 LR, one curve per
scale, and the optimum per scale), a table with the targets, and progress lines with an
ETA. CUDA is used when present (``--device``), with larger default widths there.

    .venv/bin/python benchmarks/bench_mutransfer.py                    # everything
    .venv/bin/python benchmarks/bench_mutransfer.py --quick            # smoke run
    .venv/bin/python benchmarks/bench_mutransfer.py --parts mlp --seeds 2 --steps 150
    .venv/bin/python benchmarks/bench_mutransfer.py --parts transformer --seeds 5 \
        --reuse-centres --cache benchmarks/results/mutransfer_transformer_runs.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import pathlib
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results"
TUNED = RESULTS / "mutransfer_tuned.json"

MLP_BASE = {"mult.readout": 0.25}
"""MLP base values (SP and µP): readout multiplier ¼ with the standard readout init.

Chosen from single-seed sweeps at widths 64 and 512 (mult.readout 4, 1, ¼, 1/16; zero or
standard readout init): ¼ with the standard init gave the best loss and the least drift.
"""

DEPTH_BASE = {"mult.readout": 0.25}


@dataclass(frozen=True)
class Job:
    """One training run of a sweep."""

    exp: str
    variant: str  # "sp" | "mup" | "completep" | "unscaled"
    scale: int  # width or depth
    log2_lr: float
    seed: int


@dataclass(frozen=True)
class Experiment:
    """One sweep: which proxy, which variants, which scales, how long."""

    name: str
    variants: tuple[str, ...]  # (reference, scaled), or one of them (``--variants``)
    scales: list[int]
    axis: str
    steps: int
    base: dict[str, Any]


def _scale_config(job: Job, opts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(proxy name, the study's ``scale`` object) for one job."""
    exp = opts["experiments"][job.exp]
    if job.exp == "mlp":
        shape = {"width": job.scale, "depth": 1, "batch_size": 64, "tokens": 64 * exp.steps}
        base = {**shape, "width": exp.scales[0]}
        return "mlp", {"parameterization": job.variant, "proxy": shape, "base": base}
    if job.exp == "transformer":
        tokens = opts["tf_batch"] * opts["tf_seq"]
        shape = {"width": job.scale, "depth": 2, "batch_size": tokens, "tokens": tokens * exp.steps}
        base = {**shape, "width": exp.scales[0]}
        return "transformer", {"parameterization": job.variant, "proxy": shape, "base": base}
    batch = opts["depth_batch"]
    shape = {
        "width": opts["depth_width"],
        "depth": job.scale,
        "batch_size": batch,
        "tokens": batch * exp.steps,
    }
    # The transformer's base values were tuned at its own base width: µP maps them to
    # the depth sweep's width, so only depth changes between the sweep's curves.
    base = {
        **shape,
        "depth": exp.scales[0],
        "width": opts.get("depth_base_width") or opts["depth_width"],
    }
    param = "completep" if job.variant == "completep" else "mup"
    return opts["depth_task"], {"parameterization": param, "proxy": shape, "base": base}


def _run(args: tuple[Job, dict[str, Any]]) -> tuple[Job, float, float]:
    import torch

    from hpo_service.proxies import run_proxy

    torch.set_num_threads(1)
    job, opts = args
    name, scale = _scale_config(job, opts)
    params: dict[str, Any] = {**opts["experiments"][job.exp].base, "lr": 2.0**job.log2_lr}
    t0 = time.perf_counter()
    res = run_proxy(
        name,
        params,
        scale,
        seed=job.seed,
        data_seed=job.seed,
        seq_len=opts["tf_seq"],
        measure_every=10**9,
        device=opts["device"],
    )
    loss = res.metrics.get("val_loss", math.nan)
    return job, loss, time.perf_counter() - t0


def _cost(job: Job, opts: dict[str, Any]) -> float:
    """Relative cost of a job, for the ETA and to start the longest jobs first."""
    steps = opts["experiments"][job.exp].steps
    if job.exp == "transformer":
        return steps * ((job.scale / 64) ** 2 * 8 + 1)
    if job.exp == "depth":
        return steps * job.scale * 0.5
    return steps * ((job.scale / 128) ** 2 + 0.5)


def _cache_key(job: Job, opts: dict[str, Any]) -> str:
    """Everything that decides a run's loss, as text: the job and its experiment's settings."""
    exp: Experiment = opts["experiments"][job.exp]
    setting = {
        "job": [job.exp, job.variant, job.scale, job.log2_lr, job.seed],
        "steps": exp.steps,
        "base": exp.base,
        "scale": _scale_config(job, opts),
        "tf_seq": opts["tf_seq"],
        "device": opts["device"],
    }
    return json.dumps(setting, sort_keys=True)


def _load_cache(opts: dict[str, Any]) -> dict[str, tuple[float, float]]:
    path: pathlib.Path | None = opts.get("cache")
    if path is None or not path.exists():
        return {}
    out: dict[str, tuple[float, float]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["key"]] = (float(row["loss"]), float(row["seconds"]))
    return out


def _pool_run(
    jobs: list[Job], opts: dict[str, Any], procs: int, label: str
) -> list[tuple[Job, float, float]]:
    """Run ``jobs`` on ``procs`` processes, longest first, with progress lines and an ETA.

    With ``--cache`` every finished run is appended to a JSON-lines file and runs found
    there are not repeated, so a sweep stopped half-way (a shared machine, a deadline)
    resumes where it was instead of starting over.
    """
    cached = _load_cache(opts)
    out: list[tuple[Job, float, float]] = []
    todo: list[Job] = []
    for j in jobs:
        hit = cached.get(_cache_key(j, opts))
        if hit is None:
            todo.append(j)
        else:
            out.append((j, *hit))
    if out:
        print(f"  [{label}] {len(out)} of {len(jobs)} runs from the cache", flush=True)
    jobs = sorted(todo, key=lambda j: _cost(j, opts), reverse=True)
    if not jobs:
        return out
    total = sum(_cost(j, opts) for j in jobs)
    done_cost = 0.0
    n_cached = len(out)
    cache: pathlib.Path | None = opts.get("cache")
    start = time.perf_counter()
    next_report = 0.0
    ctx = mp.get_context("spawn" if opts["device"] == "cuda" else "fork")
    with ctx.Pool(procs) as pool:
        for res in pool.imap_unordered(_run, [(j, opts) for j in jobs]):
            out.append(res)
            if cache is not None:
                loss = res[1] if math.isfinite(res[1]) else "NaN"
                with cache.open("a") as f:
                    f.write(
                        json.dumps(
                            {"key": _cache_key(res[0], opts), "loss": loss, "seconds": res[2]}
                        )
                        + "\n"
                    )
            done_cost += _cost(res[0], opts)
            frac = done_cost / total
            if frac >= next_report or len(out) - n_cached == len(jobs):
                el = time.perf_counter() - start
                eta = el / max(frac, 1e-9) * (1 - frac)
                print(
                    f"  [{label}] {len(out) - n_cached}/{len(jobs)} runs, {el:5.0f}s "
                    f"elapsed, ETA {eta:5.0f}s",
                    flush=True,
                )
                next_report = frac + 0.1
    return out


def vertex(log2_lrs: np.ndarray, losses: np.ndarray) -> tuple[float, bool]:
    """Parabola vertex through the best point and its neighbours; (value, interior?)."""
    finite = np.where(np.isfinite(losses), losses, np.inf)
    i = int(np.argmin(finite))
    if i == 0 or i == len(losses) - 1 or not np.all(np.isfinite(losses[i - 1 : i + 2])):
        return float(log2_lrs[i]), False
    x, y = log2_lrs[i - 1 : i + 2], losses[i - 1 : i + 2]
    a, b, _ = np.polyfit(x, y, 2)
    if a <= 0:
        return float(log2_lrs[i]), True
    return float(np.clip(-b / (2 * a), x[0], x[2])), True


def _probe_curve(
    exp: Experiment, variant: str, scale: int, lrs: list[float], opts: dict[str, Any], procs: int
) -> float:
    jobs = [Job(exp.name, variant, scale, lr, 0) for lr in lrs]
    res = sorted(
        _pool_run(jobs, opts, procs, f"{exp.name} probe {variant}@{scale}"),
        key=lambda r: r[0].log2_lr,
    )
    x = np.array([r[0].log2_lr for r in res])
    y = np.array([r[1] if math.isfinite(r[1]) else np.inf for r in res])
    return vertex(x, y)[0]


def centres(exp: Experiment, opts: dict[str, Any], procs: int) -> dict[str, dict[int, float]]:
    """Grid centre per (variant, scale): one-seed, one-octave probes at both ends.

    The smallest scale is shared (both variants coincide there by construction); the
    largest is probed per variant around the base optimum (SP mostly below it). Scales in
    between get the log-linear interpolation, rounded to the half octave.
    """
    c0 = _probe_curve(
        exp, exp.variants[-1], exp.scales[0], [float(e) for e in range(-14, 0)], opts, procs
    )
    c0 = round(c0 * 2) / 2
    out: dict[str, dict[int, float]] = {}
    s0, s1 = exp.scales[0], exp.scales[-1]
    for var in exp.variants:
        lo, hi = (-7, 2) if var in ("sp", "unscaled") else (-3, 3)
        c1 = _probe_curve(exp, var, s1, [c0 + e for e in range(lo, hi + 1)], opts, procs)
        out[var] = {
            s: round((c0 + (c1 - c0) * math.log(s / s0) / math.log(s1 / s0)) * 2) / 2
            for s in exp.scales
        }
        print(f"[{exp.name}] grid centres {var}: {out[var]}", flush=True)
    return out


def result_stem(exp: Experiment, opts: dict[str, Any]) -> str:
    """File stem of a sweep's results: a non-default depth task or a lone variant is tagged."""
    stem = f"mutransfer_{exp.name}"
    if exp.name == "depth" and opts["depth_task"] != "transformer":
        stem += f"_{opts['depth_task']}"
    return stem + (f"_{exp.variants[0]}" if len(exp.variants) == 1 else "")


def _previous_centres(
    exp: Experiment, opts: dict[str, Any], out_dir: pathlib.Path
) -> dict[str, dict[int, float]] | None:
    """The grid centres of an earlier run of the same sweep (same scales and steps), if any.

    The probes only place the grid; reusing them saves their runs when a sweep is repeated
    with more seeds. Whether each optimum is interior is still checked and shown.
    """
    full = Experiment(exp.name, ("",) * 2, exp.scales, exp.axis, exp.steps, exp.base)
    paths = [out_dir / f"{result_stem(e, opts)}.json" for e in (exp, full)]
    path = next((p for p in paths if p.exists()), None)
    if path is None:
        return None
    old = json.loads(path.read_text())
    prev = old.get("grid_centres", {})
    if (
        old.get("steps") != exp.steps
        or not set(exp.variants) <= set(prev)
        or any({int(k) for k in prev[v]} != set(exp.scales) for v in exp.variants)
    ):
        return None
    out = {v: {int(k): float(x) for k, x in prev[v].items()} for v in exp.variants}
    print(f"[{exp.name}] grid centres from {path.name}: {out}", flush=True)
    return out


def grid(centre: float, points: int) -> list[float]:
    """``points`` half-octave log2 LRs around ``centre`` (one more below than above)."""
    below = points // 2
    return [centre + 0.5 * (k - below) for k in range(points)]


def _seed_optimum(
    rows: list[tuple[Job, float, float]], lrs: list[float], seed: int, cap: float
) -> float:
    y = [
        next(
            (
                min(r[1], cap) if math.isfinite(r[1]) else cap
                for r in rows
                if r[0].log2_lr == lr and r[0].seed == seed
            ),
            cap,
        )
        for lr in lrs
    ]
    return vertex(np.array(lrs), np.array(y))[0]


def analyse(results: list[tuple[Job, float, float]], exp: Experiment, cap: float) -> dict[str, Any]:
    """Per variant and scale: seed-mean curve, optimum (vertex), per-seed optima, best loss."""
    out: dict[str, Any] = {"variants": {}}
    seeds = sorted({r[0].seed for r in results})
    for var in exp.variants:
        per: dict[str, Any] = {}
        for s in exp.scales:
            rows = [r for r in results if r[0].variant == var and r[0].scale == s]
            lrs = sorted({r[0].log2_lr for r in rows})
            vals = [
                [min(r[1], cap) if math.isfinite(r[1]) else cap for r in rows if r[0].log2_lr == lr]
                for lr in lrs
            ]
            mean = [float(np.mean(v)) for v in vals]
            v, interior = vertex(np.array(lrs), np.array(mean))
            i = int(np.argmin(mean))
            per[str(s)] = {
                "log2_lr": lrs,
                "mean": mean,
                "std": [float(np.std(v)) for v in vals],
                "optimum": v,
                "interior": interior,
                "best_loss": mean[i],
                "best_loss_std": float(np.std(vals[i])),
                "seed_optima": [_seed_optimum(rows, lrs, sd, cap) for sd in seeds],
                "diverged_runs": sum(1 for r in rows if not math.isfinite(r[1])),
            }
        optima = [per[str(s)]["optimum"] for s in exp.scales]
        seed_drifts = [
            per[str(exp.scales[-1])]["seed_optima"][k] - per[str(exp.scales[0])]["seed_optima"][k]
            for k in range(len(seeds))
        ]
        out["variants"][var] = {
            "curves": per,
            "drift_octaves": optima[-1] - optima[0],
            "spread_octaves": max(optima) - min(optima),
            "seed_drifts": seed_drifts,
            "bootstrap": _bootstrap(results, exp, var, seeds, cap),
        }
    return out


def _bootstrap(
    results: list[tuple[Job, float, float]],
    exp: Experiment,
    var: str,
    seeds: list[int],
    cap: float,
    draws: int = 400,
) -> dict[str, Any]:
    """Seed-bootstrap of the optima: how much of the drift and spread is seed noise.

    Seeds are resampled jointly for all scales (a seed fixes the batches at every scale),
    and each resample's seed-mean curves give optima, a drift and a spread. The spread
    (max − min over scales) is biased upwards by noise, so its interval says whether a
    miss of the ½-octave target is resolved by the seeds at hand.
    """
    table: dict[tuple[int, float, int], float] = {}
    for job, loss, _ in results:
        if job.variant == var:
            table[(job.scale, job.log2_lr, job.seed)] = (
                min(loss, cap) if math.isfinite(loss) else cap
            )
    grids = {s: sorted({lr for (sc, lr, _) in table if sc == s}) for s in exp.scales}
    mats = {
        s: np.array([[table.get((s, lr, sd), cap) for lr in grids[s]] for sd in seeds])
        for s in exp.scales
    }
    rng = np.random.default_rng(0)
    opt = np.empty((draws, len(exp.scales)))
    for b in range(draws):
        pick = rng.integers(0, len(seeds), len(seeds))
        for k, s in enumerate(exp.scales):
            opt[b, k] = vertex(np.array(grids[s]), mats[s][pick].mean(axis=0))[0]
    drift = opt[:, -1] - opt[:, 0]
    spread = opt.max(axis=1) - opt.min(axis=1)
    return {
        "draws": draws,
        "optimum_se": {str(s): float(opt[:, k].std()) for k, s in enumerate(exp.scales)},
        "drift_ci95": [float(np.percentile(drift, 2.5)), float(np.percentile(drift, 97.5))],
        "spread_ci95": [float(np.percentile(spread, 2.5)), float(np.percentile(spread, 97.5))],
    }


def verdicts(exp: Experiment, summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for this sweep, measured."""
    if len(exp.variants) == 1:  # one variant run alone: only its own targets
        var = exp.variants[0]
        d = summary["variants"][var]
        best = [d["curves"][str(s)]["best_loss"] for s in exp.scales]
        if var in ("sp", "unscaled"):
            return {f"{var} |drift| >= 2.5": abs(d["drift_octaves"]) >= 2.5}
        return {
            f"{var} |drift| <= 0.5": abs(d["drift_octaves"]) <= 0.5,
            f"{var} spread <= 0.5": d["spread_octaves"] <= 0.5,
            f"{var} best loss improves with scale": all(
                b1 < b0 for b0, b1 in itertools.pairwise(best)
            ),
        }
    ref, scaled = (summary["variants"][v] for v in exp.variants)
    best_ref = [ref["curves"][str(s)]["best_loss"] for s in exp.scales]
    best = [scaled["curves"][str(s)]["best_loss"] for s in exp.scales]
    out = {
        f"{exp.variants[1]} |drift| <= 0.5": abs(scaled["drift_octaves"]) <= 0.5,
        f"{exp.variants[0]} |drift| >= 2.5": abs(ref["drift_octaves"]) >= 2.5,
        f"{exp.variants[1]} spread <= 0.5": scaled["spread_octaves"] <= 0.5,
        f"{exp.variants[1]} best loss <= {exp.variants[0]}'s at every scale": all(
            b <= r + 1e-9 for b, r in zip(best, best_ref, strict=True)
        ),
        f"{exp.variants[1]} best loss improves with scale": all(
            b1 < b0 for b0, b1 in itertools.pairwise(best)
        ),
    }
    return out


def _table(exp: Experiment, summary: dict[str, Any]) -> None:
    print(
        f"\n== {exp.name}: optimum log2 LR (parabola vertex) / best seed-mean loss per "
        f"{exp.axis} =="
    )
    print(
        f"{'variant':>10} "
        + " ".join(f"{s:>15}" for s in exp.scales)
        + "   drift  spread  per-seed drifts"
    )
    for var, d in summary["variants"].items():
        cells = []
        for s in exp.scales:
            c = d["curves"][str(s)]
            flag = "" if c["interior"] else "*"
            cells.append(f"{c['optimum']:6.2f}{flag:1}/{c['best_loss']:6.3f}")
        seeds = ", ".join(f"{x:+.2f}" for x in d["seed_drifts"])
        print(
            f"{var:>10} "
            + " ".join(f"{c:>15}" for c in cells)
            + f"  {d['drift_octaves']:+6.2f}  {d['spread_octaves']:6.2f}  [{seeds}]"
        )
    print("  (* = optimum on the grid edge)")
    for var, d in summary["variants"].items():
        b = d["bootstrap"]
        se = ", ".join(f"{b['optimum_se'][str(s)]:.2f}" for s in exp.scales)
        print(
            f"  {var} seed bootstrap ({b['draws']} draws): optimum s.e. [{se}], drift 95% "
            f"[{b['drift_ci95'][0]:+.2f}, {b['drift_ci95'][1]:+.2f}], spread 95% "
            f"[{b['spread_ci95'][0]:.2f}, {b['spread_ci95'][1]:.2f}]"
        )
    for target, ok in summary["targets"].items():
        print(f"  {'PASS' if ok else 'MISS'}  {target}")


def _plot(exp: Experiment, summary: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(exp.variants)
    fig, axes = plt.subplots(1, n + 1, figsize=(5.7 * (n + 1), 4.4))
    cmap = plt.get_cmap("viridis")
    lo = min(min(c["mean"]) for d in summary["variants"].values() for c in d["curves"].values())
    for ax, var in zip(axes[:n], exp.variants, strict=True):
        d = summary["variants"][var]
        for k, s in enumerate(exp.scales):
            c = d["curves"][str(s)]
            color = cmap(k / max(1, len(exp.scales) - 1))
            ax.errorbar(
                c["log2_lr"],
                c["mean"],
                yerr=c["std"],
                color=color,
                label=f"{exp.axis} {s}",
                marker="o",
                ms=3,
                capsize=2,
            )
            ax.axvline(c["optimum"], color=color, ls=":", lw=1)
        ax.set_title(f"{exp.name} — {var} (drift {d['drift_octaves']:+.2f} oct)")
        ax.set_xlabel("log2 learning rate")
        ax.set_ylabel("validation loss")
        ax.set_ylim(lo - 0.05, lo + 1.0)
        ax.legend(fontsize=8)
    ax = axes[n]
    for var, marker in zip(exp.variants, ("s", "o"), strict=False):
        d = summary["variants"][var]
        xs = [math.log2(s) for s in exp.scales]
        ys = [d["curves"][str(s)]["optimum"] for s in exp.scales]
        ax.plot(xs, ys, marker=marker, label=var)
        for x, s in zip(xs, exp.scales, strict=True):
            so = d["curves"][str(s)]["seed_optima"]
            ax.scatter([x] * len(so), so, s=8, alpha=0.4)
    ax.set_xlabel(f"log2 {exp.axis}")
    ax.set_ylabel("optimal log2 LR")
    ax.set_title("optimum per scale (line: seed mean; dots: per seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(
    exp: Experiment,
    opts: dict[str, Any],
    procs: int,
    seeds: int,
    points: int,
    out_dir: pathlib.Path,
) -> dict[str, Any]:
    """Probe, sweep, analyse, print, plot and save one experiment."""
    t0 = time.perf_counter()
    c = _previous_centres(exp, opts, out_dir) if opts.get("reuse_centres") else None
    if c is None:
        c = centres(exp, opts, procs)
    grids = {var: {s: grid(c[var][s], points) for s in exp.scales} for var in exp.variants}
    jobs = [
        Job(exp.name, var, s, lr, seed)
        for var in exp.variants
        for s in exp.scales
        for lr in grids[var][s]
        for seed in range(seeds)
    ]
    print(
        f"[{exp.name}] {len(jobs)} runs ({points} LRs × {len(exp.scales)} {exp.axis}s × "
        f"{seeds} seeds × {len(exp.variants)} variants, {exp.steps} steps each)",
        flush=True,
    )
    results = _pool_run(jobs, opts, procs, exp.name)
    chars = exp.name == "transformer" or opts["depth_task"] in ("transformer", "mlp_chars")
    cap = math.log(128 if chars else 10) + 1.0
    summary = analyse(results, exp, cap)
    summary["targets"] = verdicts(exp, summary)
    summary["grid_centres"] = c
    summary["base_values"] = exp.base
    summary["steps"] = exp.steps
    if exp.name == "depth":
        summary["task"] = {
            "proxy": opts["depth_task"],
            "batch_size": opts["depth_batch"],
            "base_width": opts.get("depth_base_width") or opts["depth_width"],
            "width": opts["depth_width"],
        }
    summary["seeds"] = seeds
    summary["wall_seconds"] = time.perf_counter() - t0
    summary["run_seconds"] = sum(r[2] for r in results)
    _table(exp, summary)
    stem = result_stem(exp, opts)
    _plot(exp, summary, out_dir / f"{stem}.png")
    (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    return summary


# ---- tuning the base multipliers through the service ---------------------------------------


def _log_param(name: str, low: float, high: float) -> dict[str, Any]:
    return {"name": name, "type": "float", "low": low, "high": high, "scale": "log"}


TUNE_SPACE = [
    _log_param("lr", 2**-10, 2**-2),
    _log_param("mult.readout", 1 / 16, 16),
    _log_param("init_std.embedding", 1 / 4, 32),
    _log_param("init_std.readout", 1 / 4096, 1.0),
]


def tune(opts: dict[str, Any], budgets: tuple[int, int], seed: int = 0) -> dict[str, Any]:
    """Tune the transformer's base values at its base width with two service studies.

    A µP study (its ``scale`` names the base shape) with the ``gp`` designer gets
    ``budgets[0]`` trials; a second study with the ``local`` designer (trust region around
    the incumbent, diverged runs kept as a cliff map) imports the first one's trials and
    refines for ``budgets[1]`` more. Trials run in this process, one at a time, through
    the HTTP API of an in-process app (FastAPI TestClient) on a throwaway SQLite file.
    """
    import torch
    from fastapi.testclient import TestClient

    from hpo_service.api.app import create_app
    from hpo_service.client import HPOClient
    from hpo_service.config import Settings
    from hpo_service.db.base import utcnow
    from hpo_service.db.database import Database
    from hpo_service.db.migrate import upgrade_to_head
    from hpo_service.domain import Role
    from hpo_service.proxies import run_proxy
    from hpo_service.services import api_keys

    torch.set_num_threads(1)
    exp: Experiment = opts["experiments"]["transformer"]
    name, scale = _scale_config(Job("transformer", "mup", exp.scales[0], 0.0, 0), opts)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/tune.db")
        upgrade_to_head(db.engine)
        now = utcnow()
        ckey = api_keys.create_key(db, role=Role.CLIENT, tenant="bench", name="c", now=now).key
        wkey = api_keys.create_key(db, role=Role.WORKER, tenant="bench", name="w", now=now).key
        app = create_app(Settings(database_url=db.url, reclaim_interval_seconds=3600), db=db)
        history: list[dict[str, Any]] = []
        with TestClient(app) as http:
            client = HPOClient(api_key=ckey, http=http)
            worker = HPOClient(api_key=wkey, http=http)
            study_ids = []
            for stage, (algorithm, budget) in enumerate(zip(("gp", "local"), budgets, strict=True)):
                study = client.create_study(
                    {
                        "name": f"tf-base-{algorithm}",
                        "family": "mutransfer-tune",
                        "objective": {"metric": "val_loss", "goal": "minimize"},
                        "space": {"parameters": TUNE_SPACE},
                        "algorithm": algorithm,
                        "seed": seed,
                        "scale": scale,
                    }
                )
                study_ids.append(study["id"])
                if stage:
                    done = [t for t in history if t["val_loss"] is not None]
                    client.add_trials(
                        study["id"],
                        [
                            {
                                "params": t["params"],
                                "result": {"metrics": {"val_loss": t["val_loss"]}},
                            }
                            for t in done
                        ],
                    )
                for _ in range(budget):
                    trial = worker.suggest(study["id"], "bench", 1)["trials"][0]
                    res = run_proxy(
                        name,
                        trial["params"],
                        study["scale"],
                        seed=seed,
                        data_seed=seed,
                        seq_len=opts["tf_seq"],
                        measure_every=10**9,
                        device=opts["device"],
                    )
                    loss = res.metrics.get("val_loss")
                    if loss is None:
                        worker.infeasible(trial["id"], "bench", "diverged")
                    else:
                        worker.complete(trial["id"], "bench", {"val_loss": loss})
                    history.append(
                        {"stage": algorithm, "params": trial["params"], "val_loss": loss}
                    )
                    print(
                        f"  [tune {algorithm}] trial {len(history)}: loss "
                        f"{loss if loss is None else round(loss, 4)}  "
                        f"{ {k: round(v, 4) for k, v in trial['params'].items()} }",
                        flush=True,
                    )
            best = client.best(study_ids[-1])[0]
    values = {k: float(v) for k, v in best["params"].items()}
    result = {
        "how": "µP study at the base shape, gp designer then local designer (seeded with the "
        "gp trials), in-process service over HTTP (TestClient), one seed",
        "scale": scale,
        "budgets": list(budgets),
        "best": values,
        "best_val_loss": best["result"]["metrics"]["val_loss"],
        "trials": history,
        "seconds": time.perf_counter() - t0,
    }
    print(
        f"[tune] best {values} loss {result['best_val_loss']:.4f} ({result['seconds']:.0f}s)",
        flush=True,
    )
    return result


def _tf_base(path: pathlib.Path) -> dict[str, Any]:
    if not path.exists():
        print(f"[transformer] no {path.name}: untuned base values (run --parts tune first)")
        return {}
    best = json.loads(path.read_text())["best"]
    return {k: v for k, v in best.items() if k != "lr"}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--parts", default="tune,mlp,transformer,depth")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--points", type=int, default=12, help="LRs per curve (half octaves)")
    ap.add_argument("--steps", type=int, default=200, help="MLP steps")
    ap.add_argument(
        "--depth-steps",
        type=int,
        default=None,
        help="default 100 (transformer, as its width sweep), 300 (MLP tasks)",
    )
    ap.add_argument(
        "--depth-batch",
        type=int,
        default=256,
        help="examples (MLP) or tokens (transformer) per step",
    )
    ap.add_argument(
        "--depth-task",
        default="transformer",
        help="residual proxy of the depth sweep (transformer, mlp_deep_teacher, "
        "mlp_chars, mlp_residual)",
    )
    ap.add_argument("--tf-steps", type=int, default=100)
    ap.add_argument("--mlp-widths", default=None, help="default 64..512 (CUDA 128..2048)")
    ap.add_argument("--tf-widths", default=None, help="default 32..256 (CUDA 64..1024)")
    ap.add_argument("--depths", default="2,4,8,16")
    ap.add_argument(
        "--depth-width",
        type=int,
        default=None,
        help="default: the transformer's base width (32), 64 for MLP tasks",
    )
    ap.add_argument(
        "--depth-schedule",
        default="linear",
        help="LR schedule of the depth sweep (constant is noisy at depth 16)",
    )
    ap.add_argument("--tf-seq", type=int, default=32)
    ap.add_argument("--tf-batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--tune-budget", default="30,12", help="gp trials, local trials")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument(
        "--reuse-centres",
        action="store_true",
        help="take the grid centres from the previous result JSON of the same "
        "sweep (same scales and steps) instead of probing again",
    )
    ap.add_argument(
        "--cache",
        default=None,
        help="JSON-lines file of finished runs: appended to, and runs found "
        "there are not repeated (resume a stopped sweep)",
    )
    ap.add_argument(
        "--variants",
        default=None,
        help="run one variant alone (e.g. mup: repeat µP's sweep with more seeds "
        "without SP's); its results get their own file",
    )
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    mlp_widths = a.mlp_widths or ("128,256,512,1024,2048" if cuda else "64,128,256,512")
    tf_widths = a.tf_widths or ("64,128,256,512,1024" if cuda else "32,64,128,256")
    tf_depth = a.depth_task == "transformer"
    a.depth_steps = a.depth_steps or (100 if tf_depth else 300)
    if a.quick:
        a.seeds, a.steps, a.tf_steps, a.points, a.tune_budget = 1, 40, 20, 6, "4,2"
        a.depth_steps = 40
        mlp_widths, tf_widths, a.depths = "64,256", "32,64", "2,8"
    out_dir = pathlib.Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tuned = out_dir / TUNED.name
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    tf_base_width = ints(tf_widths)[0]
    depth_width = a.depth_width or (tf_base_width if tf_depth else 64)
    depth_base = (
        {**_tf_base(tuned), "schedule": a.depth_schedule}
        if tf_depth
        else {**DEPTH_BASE, "schedule": a.depth_schedule}
    )
    experiments = {
        "mlp": Experiment("mlp", ("sp", "mup"), ints(mlp_widths), "width", a.steps, MLP_BASE),
        "transformer": Experiment(
            "transformer", ("sp", "mup"), ints(tf_widths), "width", a.tf_steps, {}
        ),
        "depth": Experiment(
            "depth", ("unscaled", "completep"), ints(a.depths), "depth", a.depth_steps, depth_base
        ),
    }
    opts: dict[str, Any] = {
        "experiments": experiments,
        "depth_width": depth_width,
        "depth_base_width": tf_base_width if tf_depth else depth_width,
        "depth_batch": a.depth_batch,
        "depth_task": a.depth_task,
        "tf_seq": a.tf_seq,
        "tf_batch": a.tf_batch,
        "device": device,
        "reuse_centres": a.reuse_centres,
        "cache": pathlib.Path(a.cache) if a.cache else None,
    }
    print(f"device {device}; parts {a.parts}", flush=True)
    t_all = time.perf_counter()
    for part in a.parts.split(","):
        if part == "tune":
            g, loc = ints(a.tune_budget)
            tuned.write_text(json.dumps(tune(opts, (g, loc)), indent=1))
            continue
        exp = experiments[part]
        if part == "transformer":
            exp = Experiment(
                exp.name, exp.variants, exp.scales, exp.axis, exp.steps, _tf_base(tuned)
            )
            experiments[part] = exp
        if a.variants:
            keep = tuple(v for v in exp.variants if v in a.variants.split(","))
            exp = Experiment(exp.name, keep, exp.scales, exp.axis, exp.steps, exp.base)
        sweep(exp, opts, 1 if cuda else a.procs, a.seeds, a.points, out_dir)
    print(f"\ndone in {time.perf_counter() - t_all:.0f}s; results in {out_dir}")


if __name__ == "__main__":
    main()
