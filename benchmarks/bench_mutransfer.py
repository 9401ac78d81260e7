"""µTransfer benchmark: does the optimal learning rate stay put as width (and depth) grow?

Three experiments, each an LR sweep (log2-spaced, half-octave grid, several seeds, fixed
step count, the same batches for every LR) with the built-in proxies of
``hpo_service.client.training``:

- ``mlp``: MLP d_in→w→w→10 (ReLU, no bias) on teacher–student data, SP vs µP, widths
  64…512 (base 64).
- ``transformer``: 2-block pre-norm character transformer on Python's stdlib sources, SP vs
  µP (CPU default widths 32…256; ``--tf-widths`` for more, e.g. on CUDA).
- ``depth``: residual pre-norm MLP at width 64, depths 2…16 (base 2), CompleteP (α=1
  residual 1/L) vs an unscaled residual (µP without a depth rule).

Optimum per curve = vertex of the parabola through the best grid point of the seed-mean
loss and its two neighbours (log2 LR). Drift = optimum at the largest scale minus the
optimum at the smallest, in octaves. Grids are centred on a short probe at the base
scale (where SP and µP coincide). Outputs JSON + one PNG per experiment under
``benchmarks/results/``; tables and the ETA are printed.

    .venv/bin/python benchmarks/bench_mutransfer.py                 # full CPU run
    .venv/bin/python benchmarks/bench_mutransfer.py --quick         # smoke run, ~1 min
    .venv/bin/python benchmarks/bench_mutransfer.py --parts mlp --seeds 2 --steps 150
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import pathlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results"


@dataclass(frozen=True)
class Job:
    exp: str
    variant: str  # "sp" | "mup" | "completep" | "unscaled"
    scale: int  # width or depth
    log2_lr: float
    seed: int
    steps: int


def _scale_config(job: Job, opts: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(proxy name, scale config, extra params) for one job."""
    if job.exp == "mlp":
        shape = {"width": job.scale, "depth": 2, "batch_size": 64, "tokens": 64 * job.steps}
        base = {**shape, "width": opts["mlp_widths"][0]}
        return "mlp", {"parameterization": job.variant, "proxy": shape, "base": base}, {}
    if job.exp == "transformer":
        tokens = opts["tf_batch"] * opts["tf_seq"]
        shape = {"width": job.scale, "depth": 2, "batch_size": tokens,
                 "tokens": tokens * job.steps}
        base = {**shape, "width": opts["tf_widths"][0]}
        return "transformer", {"parameterization": job.variant, "proxy": shape, "base": base}, {}
    shape = {"width": opts["depth_width"], "depth": job.scale, "batch_size": 64,
             "tokens": 64 * job.steps}
    base = {**shape, "depth": opts["depths"][0]}
    param = "completep" if job.variant == "completep" else "mup"
    return "mlp_residual", {"parameterization": param, "proxy": shape, "base": base}, {}


def _run(args: tuple[Job, dict[str, Any]]) -> tuple[Job, float, float]:
    import torch

    from hpo_service.client.training import run_proxy

    torch.set_num_threads(1)
    job, opts = args
    name, scale, extra = _scale_config(job, opts)
    params: dict[str, Any] = {"lr": 2.0**job.log2_lr, **extra}
    if job.variant != "sp":
        params.update(opts["mup_base"])
    t0 = time.perf_counter()
    res = run_proxy(name, params, scale, seed=job.seed, data_seed=job.seed,
                    seq_len=opts["tf_seq"], measure_every=10**9)
    loss = res.metrics.get("val_loss", math.nan)
    return job, loss, time.perf_counter() - t0


def _cost(job: Job) -> float:
    if job.exp == "transformer":
        return job.steps * (job.scale / 64) ** 2 * 8 + job.steps
    if job.exp == "depth":
        return job.steps * job.scale * 0.5
    return job.steps * (job.scale / 128) ** 2 + job.steps * 0.5


def _pool_run(jobs: list[Job], opts: dict[str, Any], procs: int,
              label: str) -> list[tuple[Job, float, float]]:
    jobs = sorted(jobs, key=_cost, reverse=True)
    total = sum(_cost(j) for j in jobs)
    done_cost = 0.0
    out: list[tuple[Job, float, float]] = []
    start = time.perf_counter()
    next_report = 0.0
    ctx = mp.get_context("fork")
    with ctx.Pool(procs) as pool:
        for res in pool.imap_unordered(_run, [(j, opts) for j in jobs]):
            out.append(res)
            done_cost += _cost(res[0])
            frac = done_cost / total
            if frac >= next_report or len(out) == len(jobs):
                el = time.perf_counter() - start
                eta = el / max(frac, 1e-9) * (1 - frac)
                print(f"  [{label}] {len(out)}/{len(jobs)} runs, {el:5.0f}s elapsed, "
                      f"ETA {eta:5.0f}s", flush=True)
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
    v = -b / (2 * a)
    return float(np.clip(v, x[0], x[2])), True


def _grid(center: float, lo: float, hi: float) -> list[float]:
    return [center + k * 0.5 for k in range(int(lo * 2), int(hi * 2) + 1)]


def _probe(exp: str, variant: str, scale: int, opts: dict[str, Any], procs: int,
           steps: int) -> float:
    """Coarse 1-octave sweep at the base scale, one seed: where to centre the grids."""
    jobs = [Job(exp, variant, scale, float(e), 0, steps) for e in range(-14, 0)]
    res = _pool_run(jobs, opts, procs, f"{exp} probe")
    res.sort(key=lambda r: r[0].log2_lr)
    x = np.array([r[0].log2_lr for r in res])
    y = np.array([r[1] for r in res])
    v, _ = vertex(x, y)
    return round(v * 2) / 2


def analyse(results: list[tuple[Job, float, float]], exp: str, variants: list[str],
            scales: list[int], cap: float) -> dict[str, Any]:
    out: dict[str, Any] = {"variants": {}}
    for var in variants:
        per: dict[str, Any] = {}
        for s in scales:
            rows = [r for r in results if r[0].exp == exp and r[0].variant == var
                    and r[0].scale == s]
            lrs = sorted({r[0].log2_lr for r in rows})
            mean, std = [], []
            for lr in lrs:
                vals = [min(r[1], cap) if math.isfinite(r[1]) else cap
                        for r in rows if r[0].log2_lr == lr]
                mean.append(float(np.mean(vals)))
                std.append(float(np.std(vals)))
            v, interior = vertex(np.array(lrs), np.array(mean))
            per[str(s)] = {"log2_lr": lrs, "mean": mean, "std": std, "optimum": v,
                           "interior": interior, "best_loss": float(min(mean))}
        opts_ = [per[str(s)]["optimum"] for s in scales]
        out["variants"][var] = {
            "curves": per,
            "drift_octaves": opts_[-1] - opts_[0],
            "spread_octaves": max(opts_) - min(opts_),
        }
    return out


def _table(exp: str, summary: dict[str, Any], scales: list[int], axis: str) -> None:
    print(f"\n== {exp}: optimum log2 LR (parabola vertex) and best loss per {axis} ==")
    print(f"{'variant':>10} " + " ".join(f"{s:>14}" for s in scales) +
          "   drift  spread")
    for var, d in summary["variants"].items():
        cells = []
        for s in scales:
            c = d["curves"][str(s)]
            flag = "" if c["interior"] else "*"
            cells.append(f"{c['optimum']:6.2f}{flag:1}/{c['best_loss']:6.3f}")
        print(f"{var:>10} " + " ".join(f"{c:>14}" for c in cells) +
              f"  {d['drift_octaves']:+6.2f}  {d['spread_octaves']:6.2f}")
    print("  (* = optimum on the grid edge)")


def _plot(exp: str, summary: dict[str, Any], scales: list[int], axis: str,
          path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(summary["variants"])
    fig, axes = plt.subplots(1, len(variants), figsize=(6 * len(variants), 4.2), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, var in zip(np.atleast_1d(axes), variants, strict=True):
        d = summary["variants"][var]
        for k, s in enumerate(scales):
            c = d["curves"][str(s)]
            color = cmap(k / max(1, len(scales) - 1))
            ax.errorbar(c["log2_lr"], c["mean"], yerr=c["std"], color=color,
                        label=f"{axis} {s}", marker="o", ms=3, capsize=2)
            ax.axvline(c["optimum"], color=color, ls=":", lw=1)
        ax.set_title(f"{exp} — {var} (drift {d['drift_octaves']:+.2f} oct)")
        ax.set_xlabel("log2 learning rate")
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("validation loss")
    lo = min(min(c["mean"]) for d in summary["variants"].values() for c in d["curves"].values())
    np.atleast_1d(axes)[0].set_ylim(lo - 0.05, lo + 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="mlp,transformer,depth")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200, help="MLP and depth steps")
    ap.add_argument("--tf-steps", type=int, default=100)
    ap.add_argument("--mlp-widths", default="64,128,256,512")
    ap.add_argument("--tf-widths", default="32,64,128,256")
    ap.add_argument("--depths", default="2,4,8,16")
    ap.add_argument("--tf-seq", type=int, default=32)
    ap.add_argument("--tf-batch", type=int, default=8)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--readout-zero-init", type=int, default=1,
                    help="µP runs start the readout at zero (mup's recommendation)")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.steps, a.tf_steps = 1, 40, 20
        a.mlp_widths, a.tf_widths, a.depths = "64,256", "32,64", "2,8"
    opts: dict[str, Any] = {
        "mlp_widths": [int(x) for x in a.mlp_widths.split(",")],
        "tf_widths": [int(x) for x in a.tf_widths.split(",")],
        "depths": [int(x) for x in a.depths.split(",")],
        "depth_width": 64,
        "tf_seq": a.tf_seq,
        "tf_batch": a.tf_batch,
        "mup_base": {"init_std.readout": 0.0} if a.readout_zero_init else {},
    }
    out_dir = pathlib.Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = a.parts.split(",")
    report: dict[str, Any] = {"options": {**vars(a), **opts}}
    experiments = {
        "mlp": (["sp", "mup"], opts["mlp_widths"], "width", a.steps),
        "transformer": (["sp", "mup"], opts["tf_widths"], "width", a.tf_steps),
        "depth": (["unscaled", "completep"], opts["depths"], "depth", a.steps),
    }
    t_all = time.perf_counter()
    for exp in parts:
        variants, scales, axis, steps = experiments[exp]
        t0 = time.perf_counter()
        centre = _probe(exp, variants[1], scales[0], opts, a.procs, steps)
        print(f"[{exp}] base-scale probe optimum ≈ 2^{centre}", flush=True)
        grids = {variants[0]: _grid(centre, -5.5, 1.0) if exp != "depth"
                 else _grid(centre, -4.0, 2.5),
                 variants[1]: _grid(centre, -3.0, 3.0)}
        jobs = [Job(exp, var, s, lr, seed, steps)
                for var in variants for s in scales for lr in grids[var]
                for seed in range(a.seeds)]
        print(f"[{exp}] {len(jobs)} runs ({len(grids[variants[0]])}/{len(grids[variants[1]])}"
              f" LRs × {len(scales)} {axis}s × {a.seeds} seeds × 2)", flush=True)
        results = _pool_run(jobs, opts, a.procs, exp)
        cap = math.log(128 if exp == "transformer" else 10) + 1.0
        summary = analyse(results, exp, variants, scales, cap)
        summary["wall_seconds"] = time.perf_counter() - t0
        summary["probe_centre"] = centre
        report[exp] = summary
        _table(exp, summary, scales, axis)
        _plot(exp, summary, scales, axis, out_dir / f"mutransfer_{exp}.png")
        (out_dir / "mutransfer.json").write_text(json.dumps(report, indent=1))
    report["wall_seconds"] = time.perf_counter() - t_all
    (out_dir / "mutransfer.json").write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out_dir}/mutransfer.json and PNGs in {report['wall_seconds']:.0f}s")


if __name__ == "__main__":
    main()
