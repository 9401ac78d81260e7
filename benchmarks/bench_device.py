"""CUDA against the CPU, in the same run, on the two paths that do numerical work.

The engine and the proxy trainers pick CUDA when the process sees a GPU and the CPU
otherwise (``engine/device.py``, ``proxies/runner.py``). CI has no GPU, so this
benchmark is where the CUDA paths are exercised and compared with the CPU on the same
machine. Every cell runs in its own subprocess; the CPU arm hides the GPU with
``CUDA_VISIBLE_DEVICES=""`` so the code under test makes its own device choice, exactly as
a worker or the service would.

- ``gp``: a fresh suggestion (model refitted to new data, 8 pending trials) at d = 12 and
  each ``--ns``, timed as in ``bench_latency.py`` (same history, same cell code).
- ``proxy``: each ``--proxies`` trained for ``--steps`` steps (a) at the CPU default shape
  on both devices, so throughput compares like with like, and (b) on CUDA at the CUDA
  default shape (bf16 autocast), checking that training there is sane: no divergence, and
  a validation loss below the loss at the first step.

On a machine without a GPU only the CPU arm runs. Prints a table; writes JSON and a PNG
(``--out``).

Usage::

    .venv/bin/python benchmarks/bench_device.py
    .venv/bin/python benchmarks/bench_device.py --ns 300,1000 --proxies mlp --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"
DIM = 12


def _cell_gp(n: int, repeats: int) -> dict[str, Any]:
    from benchmarks.bench_latency import _cell_ours
    from hpo_service.engine.device import device

    out = _cell_ours(DIM, n, repeats)
    out["device"] = str(device())
    return out


def _cell_proxy(name: str, shape: str, steps: int) -> dict[str, Any]:
    import torch

    from hpo_service.proxies.runner import PROXIES, default_shape, run_proxy

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    proxy_shape = default_shape(name, torch.device(shape))
    # Experts are a µP-for-MoE notion: a mixture-of-experts proxy needs that parameterisation.
    parameterization = "moe_mup" if proxy_shape.experts else "sp"
    scale = {"parameterization": parameterization, "proxy": proxy_shape.axes()}
    curve: list[float] = []

    def record(step: int, values: dict[str, float]) -> bool:
        curve.append(values["train_loss"])
        return False

    # Untimed warm-up: CUDA context, kernels' first launch, allocator.
    # Character proxies: the CPU shape keeps the CPU context length on both devices.
    seq_len = PROXIES[name].seq_len_cpu if shape == "cpu" else None
    run_proxy(name, {"lr": 1e-3}, scale, seed=1, max_steps=3, seq_len=seq_len)
    result = run_proxy(
        name,
        {"lr": 1e-3},
        scale,
        seed=0,
        max_steps=steps,
        measure_every=max(1, steps // 10),
        on_measurement=record,
        seq_len=seq_len,
    )
    return {
        "device": str(dev),
        "shape": proxy_shape.axes(),
        "steps": result.metrics.get("steps"),
        "val_loss": result.metrics.get("val_loss"),
        "first_loss": curve[0] if curve else None,
        "diverged": result.diverged,
        "wall_seconds": result.cost["wall_seconds"],
        "tokens_per_s": result.cost["tokens_per_s"],
    }


def _run(cell: list[str], gpu: bool, timeout_s: float) -> dict[str, Any] | None:
    from benchmarks.bench_latency import _run_cell

    env = dict(os.environ)
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return _run_cell(cell, timeout_s, script=__file__, env=env)


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="300,1000,3000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--proxies", default="mlp,mlp_residual,transformer,transformer_moe")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cell-timeout", type=float, default=300.0)
    parser.add_argument("--out", default=str(RESULTS / "device.json"))
    parser.add_argument("--cell", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.cell:
        kind, *rest = args.cell
        import warnings

        warnings.filterwarnings("ignore")
        if kind == "gp":
            result = _cell_gp(int(rest[0]), int(rest[1]))
        else:
            result = _cell_proxy(rest[0], rest[1], int(rest[2]))
        print(json.dumps(result))
        return 0

    gpu = _has_cuda()
    devices = ["cpu", "cuda"] if gpu else ["cpu"]
    ns = [int(v) for v in args.ns.split(",") if v]
    proxies = [p for p in args.proxies.split(",") if p]
    plan: list[tuple[str, list[str], bool]] = []
    for n in ns:
        for dev in devices:
            plan.append((f"gp n={n} on {dev}", ["gp", str(n), str(args.repeats)], dev == "cuda"))
    for name in proxies:
        for dev in devices:
            plan.append(
                (
                    f"{name} cpu-shape on {dev}",
                    ["proxy", name, "cpu", str(args.steps)],
                    dev == "cuda",
                )
            )
        if gpu:
            plan.append(
                (f"{name} cuda-shape on cuda", ["proxy", name, "cuda", str(args.steps)], True)
            )
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for i, (label, cell, on_gpu) in enumerate(plan, 1):
        t0 = time.perf_counter()
        out = _run(cell, on_gpu, args.cell_timeout)
        elapsed = time.perf_counter() - t_start
        eta = elapsed / i * (len(plan) - i)
        print(
            f"[{i}/{len(plan)}] {label}: {time.perf_counter() - t0:.1f} s "
            f"(elapsed {elapsed:.0f} s, ETA {eta:.0f} s)",
            flush=True,
        )
        if out is not None:
            rows.append({"label": label, "cell": cell, "gpu_visible": on_gpu, **out})

    summary = _summarise(rows, ns, proxies)
    _print(summary, gpu)
    meta = {"gpu": _gpu_name() if gpu else None, "steps": args.steps, "repeats": args.repeats}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=2))
    _plot(summary, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


def _gpu_name() -> str:
    import torch

    return str(torch.cuda.get_device_name(0))


def _summarise(rows: list[dict[str, Any]], ns: list[int], proxies: list[str]) -> dict[str, Any]:
    gp: dict[str, dict[str, float]] = {}
    for n in ns:
        for r in rows:
            if r["cell"][0] == "gp" and int(r["cell"][1]) == n:
                key = "cuda" if r["gpu_visible"] else "cpu"
                gp.setdefault(str(n), {})[f"{key}_p50_s"] = float(np.median(r["times"]))
                gp[str(n)][f"{key}_device"] = r["device"]  # type: ignore[assignment]
    proxy: dict[str, dict[str, Any]] = {}
    for name in proxies:
        for r in rows:
            if r["cell"][0] != "proxy" or r["cell"][1] != name:
                continue
            key = f"{r['cell'][2]}-shape/{'cuda' if r['gpu_visible'] else 'cpu'}"
            proxy.setdefault(name, {})[key] = {
                k: r[k]
                for k in ("device", "tokens_per_s", "val_loss", "first_loss", "diverged", "shape")
            }
    return {"gp": gp, "proxy": proxy}


def _print(summary: dict[str, Any], gpu: bool) -> None:
    print("\nGP fresh suggestion, d=12, 8 pending (p50 seconds)")
    print(f"{'n':>6} {'cpu':>8} {'cuda':>8} {'cuda/cpu':>9}")
    for n, row in summary["gp"].items():
        cpu, cuda = row.get("cpu_p50_s"), row.get("cuda_p50_s")
        ratio = f"{cuda / cpu:9.2f}" if cpu and cuda else f"{'-':>9}"
        print(f"{n:>6} {cpu or float('nan'):8.3f} {cuda or float('nan'):8.3f} {ratio}")
    print("\nProxy training (tokens/s; validation loss; first-step loss)")
    print(f"{'proxy':<16} {'arm':<16} {'device':<7} {'tokens/s':>12} {'val':>8} {'first':>8} div")
    for name, arms in summary["proxy"].items():
        for arm, r in arms.items():
            first = r["first_loss"] if r["first_loss"] is not None else float("nan")
            val = r["val_loss"] if r["val_loss"] is not None else float("nan")
            print(
                f"{name:<16} {arm:<16} {r['device']:<7} {r['tokens_per_s']:12.0f} "
                f"{val:8.3f} {first:8.3f} {r['diverged']}"
            )
    if not gpu:
        print("\n(no GPU visible: CPU arm only)")


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ns = sorted(summary["gp"], key=int)
    for dev, style in (("cpu", "o-"), ("cuda", "s-")):
        ys = [summary["gp"][n].get(f"{dev}_p50_s") for n in ns]
        pts = [(int(n), y) for n, y in zip(ns, ys, strict=True) if y is not None]
        if pts:
            ax1.plot(*zip(*pts, strict=True), style, label=dev)
    ax1.set(xscale="log", yscale="log", xlabel="history size n", ylabel="p50 seconds")
    ax1.set_title("GP fresh suggestion (d=12, 8 pending)")
    ax1.legend()
    names = list(summary["proxy"])
    arms = sorted({a for v in summary["proxy"].values() for a in v})
    width = 0.8 / max(1, len(arms))
    for k, arm in enumerate(arms):
        vals = [summary["proxy"][n].get(arm, {}).get("tokens_per_s", 0.0) for n in names]
        ax2.bar(np.arange(len(names)) + k * width, vals, width, label=arm)
    ax2.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=15)
    ax2.set(yscale="log", ylabel="tokens / s")
    ax2.set_title("Proxy training throughput")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
