"""The ``local`` designer against space-filling (and ``gp`` when registered) baselines.

Second-stage per-module refinement: every designer starts from the same incumbent (the
answer of a global search over one shared learning rate) and gets the same trial budget.

- ``synthetic``: a per-module landscape in log space (5 role LRs, 2 init stds, 2 weight
  decays): an ill-conditioned bowl plus a rotated coupling term, with a divergence cliff
  when the sum of the log LRs passes just beyond the optimum (as in real LR landscapes, the
  best point sits close to the edge of stability). Diverged trials are reported FAILED.
- ``mlp``: a real run: the MLP proxy at width 128 (µP), tuning lr.embedding, lr.hidden,
  lr.readout, init_std.readout and mult.readout on validation loss.

Prints best-so-far medians over seeds and writes benchmarks/results/local_designer.json.

    .venv/bin/python benchmarks/bench_local.py [--seeds 5] [--budget 40] [--real-budget 16]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hpo_service.domain import (
    FloatParameter,
    Objective,
    SearchSpace,
    StudyConfig,
    Trial,
    TrialState,
)
from hpo_service.engine import registry
from hpo_service.engine.local_search import LocalSearchDesigner

RESULTS = pathlib.Path(__file__).parent / "results"

SYN_NAMES = [
    "lr.embedding",
    "lr.hidden.attn_qkv",
    "lr.hidden.mlp_out",
    "lr.norm",
    "lr.readout",
    "init_std.hidden",
    "init_std.readout",
    "wd.hidden",
    "wd.embedding",
]
_SYN_OPT = np.log([3e-3, 8e-4, 2e-3, 1e-2, 1e-3, 2e-2, 1e-3, 1e-1, 1e-2])
_SYN_W = np.array([1.0, 3.0, 2.0, 0.2, 1.5, 0.8, 0.3, 0.1, 0.05])
_rot = np.random.default_rng(7).normal(size=(9, 9)) * 0.15


def synthetic(params: dict[str, Any]) -> float | None:
    u = np.log([float(params[n]) for n in SYN_NAMES]) - _SYN_OPT
    if u[:5].sum() > 1.0:  # the divergence cliff, one nat beyond the optimum's LR sum
        return None
    return float((_SYN_W * u**2).sum() + ((_rot @ u) ** 2).sum() * 0.3)


SYN_START = {
    **dict.fromkeys(SYN_NAMES[:5], 0.0015),
    "init_std.hidden": 2e-2,
    "init_std.readout": 2e-2,
    "wd.hidden": 1e-2,
    "wd.embedding": 1e-2,
}

REAL_NAMES = ["lr.embedding", "lr.hidden", "lr.readout", "init_std.readout", "mult.readout"]
REAL_START = {
    "lr.embedding": 4e-3,
    "lr.hidden": 4e-3,
    "lr.readout": 4e-3,
    "init_std.readout": 0.088,
    "mult.readout": 1.0,
}


def real_mlp(params: dict[str, Any]) -> float | None:
    import torch

    from hpo_service.proxies import run_proxy

    torch.set_num_threads(1)
    scale = {
        "parameterization": "mup",
        "proxy": {"width": 128, "depth": 2, "batch_size": 64, "tokens": 64 * 150},
    }
    r = run_proxy("mlp", params, scale, seed=0, data_seed=0, measure_every=10**9)
    return r.metrics.get("val_loss")


def _space(names: list[str], bounds: dict[str, tuple[float, float]]) -> SearchSpace:
    return SearchSpace(
        parameters=[
            FloatParameter(
                name=n,
                low=bounds.get(n, (1e-5, 1.0))[0],
                high=bounds.get(n, (1e-5, 1.0))[1],
                scale="log",
            )
            for n in names
        ]
    )


def run_designer(
    name: str,
    space: SearchSpace,
    objective: Callable[[dict[str, Any]], float | None],
    start: dict[str, Any],
    budget: int,
    seed: int,
    batch: int = 2,
) -> list[float]:
    config = StudyConfig(space=space, objective=Objective(metric="loss"), algorithm=name, seed=seed)
    value = objective(start)
    trials = [
        Trial(
            id="t0",
            study_id="s",
            number=0,
            params=start,
            source="user",
            state=TrialState.COMPLETED,
            result={"loss": value},
        )
    ]
    best = [float(value) if value is not None else float("inf")]
    while len(trials) < budget:
        designer = (
            LocalSearchDesigner(config, seed)
            if name == "local"
            else registry.make_designer(config, seed)
        )
        designer.update(trials, [])
        for s in designer.suggest(batch):
            if len(trials) >= budget:
                break
            v = objective(s.params)
            ok = v is not None and np.isfinite(v)
            trials.append(
                Trial(
                    id=f"t{len(trials)}",
                    study_id="s",
                    number=len(trials),
                    params=s.params,
                    state=TrialState.COMPLETED if ok else TrialState.FAILED,
                    result={"loss": float(v)} if ok and v is not None else None,
                )
            )
            best.append(min(best[-1], float(v)) if ok and v is not None else best[-1])
    return best


def compare(
    label: str,
    designers: list[str],
    space: SearchSpace,
    objective: Callable[[dict[str, Any]], float | None],
    start: dict[str, Any],
    budget: int,
    seeds: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in designers:
        t0 = time.perf_counter()
        curves = [run_designer(d, space, objective, start, budget, s) for s in range(seeds)]
        arr = np.array(curves)
        out[d] = {
            "median_best": np.median(arr, axis=0).tolist(),
            "final": arr[:, -1].tolist(),
            "seconds": time.perf_counter() - t0,
        }
    print(
        f"\n== {label}: median best-so-far over {seeds} seeds (start "
        f"{out[designers[0]]['median_best'][0]:.4g}) =="
    )
    marks = [b for b in (5, 10, 20, 40, 80) if b <= budget]
    print(f"{'designer':>9} " + " ".join(f"{'@' + str(m):>9}" for m in marks) + "   finals")
    for d in designers:
        med = out[d]["median_best"]
        finals = ", ".join(f"{v:.3g}" for v in out[d]["final"])
        print(f"{d:>9} " + " ".join(f"{med[m - 1]:9.4g}" for m in marks) + f"   [{finals}]")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--real-budget", type=int, default=16)
    ap.add_argument("--real-seeds", type=int, default=2)
    a = ap.parse_args()
    available = registry.available_algorithms()
    designers = ["local"] + [d for d in ("gp", "sobol", "random") if d in available]
    print("registered designers:", available, "→ comparing", designers)
    report: dict[str, Any] = {"designers": designers}
    syn_space = _space(SYN_NAMES, {})
    report["synthetic"] = compare(
        "synthetic per-module landscape (9-d, cliff)",
        designers,
        syn_space,
        synthetic,
        SYN_START,
        a.budget,
        a.seeds,
    )
    real_space = _space(REAL_NAMES, {"init_std.readout": (1e-3, 1.0), "mult.readout": (0.1, 10.0)})
    report["mlp"] = compare(
        "real: µP MLP width 128, 150 steps (5 per-module HPs)",
        designers,
        real_space,
        real_mlp,
        REAL_START,
        a.real_budget,
        a.real_seeds,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "local_designer.json").write_text(json.dumps(report, indent=1))
    print("\nwrote", RESULTS / "local_designer.json")


if __name__ == "__main__":
    main()
