"""Does it pay off? The product's values at the target against the target's own optimum.

Everything goes through the service's own parts, in-process over its HTTP API (FastAPI's
test client on a fresh SQLite database): studies, the ``gp`` and ``local`` designers,
``POST /refine`` for the per-module stage, the family ladder, ``POST /extrapolate``, and
the built-in character transformer trained through the torch helper (CompleteP, AdamW,
linear decay). Models train on both cores, one thread each.

Shapes: the target is 8× wider and 4× deeper than the proxy, same tokens per step and
steps. ``--size tiny``: w32 d2 → w256 d8; ``default``: w64 d2 → w512 d8; ``gpu``:
w128 d2 → w1024 d8 with longer runs and bigger batches (bf16 on CUDA).

Arms, all frozen before any target run:
  a  the best global values (lr, wd, init_std.hidden, mult.readout, beta2) tuned at
     the proxy under CompleteP (``gp``), carried by the plain rules;
  b  per-module values tuned at the proxy from (a) (``POST /refine``: per-role LRs with
     the in-block roles, per-role init stds; ``local``), carried by the plain rules;
  c  what the product hands out by default: ``POST /extrapolate`` on (b)'s study once
     the family holds the ladder that ``scaling.ladder_plan`` recommends (``POST /rungs``:
     the global LR on a grid, two seeds a point, at twice the proxy's width and depths
     from the proxy's to the target's; width rungs of the per-module study): fitted
     drifts on top of the rules, and per-role values only where the ladder says they
     transfer;
  d  SP as a control: the same global search under the standard parameterisation;
  o  the oracle: (a) with the global LR swept at the target itself (search seeds only).
Every study's best is named after re-running its top three on fresh finalist seeds (the
winner's curse). Seeds are kept apart: search 0 (and 1 for the rungs), finalists
101-103, oracle 201-202, target 1001-1005. At the target every arm trains on the same
batches per seed (paired); validation every twentieth of the run on 256 fixed windows,
final loss on 1024.

Reports: final target loss per arm with seed-bootstrap 95% intervals; transfer regret
(c − o) and the LR error (log2 of c's hidden LR over o's); never-worse (c − a); speed-up
S = T / (first step where an arm's mean curve reaches (a)'s final mean loss) with a
bootstrap interval; the best arm trained in T/1.3 steps against (a) at T; (a)'s LR × 2^±1
at the target; Δ over a ladder of intermediate shapes; the speed-up at the proxy; and a
length probe (``--lengths 300,1200``, the tiny shapes).

    .venv/bin/python benchmarks/bench_e2e_transfer.py --size tiny
    .venv/bin/python benchmarks/bench_e2e_transfer.py --size default
    .venv/bin/python benchmarks/bench_e2e_transfer.py --verify 7,8,9

Runs are cached in ``benchmarks/results/e2e_transfer_runs.jsonl`` (keyed by everything that
defines a run), so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results"
RUNS = RESULTS / "e2e_transfer_runs.jsonl"
OUT = RESULTS / "e2e_transfer.json"

SEARCH_SEED = 0
FINALIST_SEEDS = (101, 102, 103)
ORACLE_SEEDS = (201, 202)
TARGET_SEEDS = (1001, 1002, 1003, 1004, 1005)
ORACLE_OFFSETS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
COMPRESSION = 1.3
FAMILY = "e2e-transformer"


@dataclass(frozen=True)
class Size:
    """One benchmark size: shapes, run length and search budgets."""

    name: str
    proxy: tuple[int, int]
    target: tuple[int, int]
    steps: int
    seq: int
    seqs: int
    global_trials: int
    refine_trials: int
    width_rung_trials: int
    device: str = "cpu"
    ladder_shapes: tuple[tuple[int, int], ...] = ()
    # The oracle's LR sweep at the target (octaves from (a)'s LR). At the default size a
    # target run costs minutes on a CPU core, so its sweep is five points, not eight.
    oracle_offsets: tuple[float, ...] = ORACLE_OFFSETS

    @property
    def tokens_per_step(self) -> int:
        return self.seq * self.seqs


SIZES = {
    "tiny": Size(
        "tiny", (32, 2), (256, 8), 300, 32, 8, 40, 40, 20,
        ladder_shapes=((64, 2), (128, 2), (32, 8), (64, 4), (128, 8)),
    ),
    "default": Size(
        "default", (64, 2), (512, 8), 300, 32, 8, 40, 40, 20,
        ladder_shapes=((128, 2), (256, 2), (64, 8), (128, 4), (256, 8)),
        oracle_offsets=(-1.0, -0.5, 0.0, 0.5, 1.0),
    ),
    # Mechanics only (a minute): every stage on toy budgets; its figures mean nothing.
    "smoke": Size(
        "smoke", (32, 2), (64, 4), 30, 32, 4, 4, 4, 3,
        ladder_shapes=((64, 2),),
    ),
    "gpu": Size(
        "gpu", (128, 2), (1024, 8), 2000, 128, 32, 40, 40, 20, "cuda",
        ladder_shapes=((256, 2), (512, 2), (128, 8), (256, 4), (512, 8)),
    ),
}  # fmt: skip


# --- training jobs (run in worker processes) -------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One training run: base values at ``base`` shape, trained at ``shape``."""

    params: tuple[tuple[str, Any], ...]
    parameterization: str
    base: tuple[int, int]
    shape: tuple[int, int]
    steps: int
    seq: int
    seqs: int
    seed: int
    device: str = "cpu"
    max_steps: int | None = None
    curve: bool = False

    def key(self) -> str:
        return hashlib.sha1(
            json.dumps(self.__dict__, sort_keys=True, default=list).encode()
        ).hexdigest()


def _shape(wd: tuple[int, int], size_steps: int, tokens_per_step: int) -> dict[str, int]:
    return {
        "width": wd[0],
        "depth": wd[1],
        "batch_size": tokens_per_step,
        "tokens": tokens_per_step * size_steps,
    }


def _train(job: Job) -> dict[str, Any]:
    import torch

    from hpo_service.proxies.runner import run_proxy

    torch.set_num_threads(1)
    tps = job.seq * job.seqs
    scale = {
        "parameterization": job.parameterization,
        "proxy": _shape(job.shape, job.steps, tps),
        "base": _shape(job.base, job.steps, tps),
    }
    steps = job.max_steps or job.steps
    result = run_proxy(
        "transformer",
        {**dict(job.params), "schedule": "linear"},
        scale,
        seed=job.seed,
        data_seed=job.seed,
        seq_len=job.seq,
        device=job.device,
        max_steps=job.max_steps,
        validate_every=max(1, steps // 20) if job.curve else None,
        validation_windows=1024 if job.curve else None,
    )
    return {
        "loss": result.metrics.get("val_loss"),
        "diverged": result.diverged,
        "seconds": result.cost["wall_seconds"],
        "curve": result.val_curve,
    }


class Runner:
    """Runs jobs on a process pool, caches every result, prints progress with an ETA."""

    def __init__(self, procs: int) -> None:
        self.pool = ProcessPoolExecutor(procs)
        self.cache: dict[str, dict[str, Any]] = {}
        if RUNS.exists():
            for line in RUNS.read_text().splitlines():
                row = json.loads(line)
                self.cache[row["key"]] = row["result"]
        self.done = 0
        self.spent = 0.0

    def run(self, jobs: Sequence[Job], label: str) -> list[dict[str, Any]]:
        todo = [j for j in dict.fromkeys(jobs) if j.key() not in self.cache]
        start = time.time()
        for i, (job, out) in enumerate(zip(todo, self.pool.map(_train, todo), strict=True)):
            self.cache[job.key()] = out
            with RUNS.open("a") as fh:
                fh.write(json.dumps({"key": job.key(), "result": out}) + "\n")
            rate = (time.time() - start) / (i + 1)
            eta = rate * (len(todo) - i - 1)
            print(
                f"  [{label}] {i + 1}/{len(todo)} loss={out['loss']} "
                f"({out['seconds']:.1f}s, eta {eta / 60:.1f} min)",
                flush=True,
            )
        return [self.cache[j.key()] for j in jobs]


# --- the service, in-process -----------------------------------------------------------------
class Service:
    """The real app on a fresh SQLite database, spoken to over HTTP with an admin key."""

    def __init__(self, path: pathlib.Path) -> None:
        from fastapi.testclient import TestClient

        from hpo_service.api.app import create_app
        from hpo_service.config import Settings
        from hpo_service.db.base import utcnow
        from hpo_service.db.database import Database
        from hpo_service.db.migrate import upgrade_to_head
        from hpo_service.domain import Role
        from hpo_service.services import api_keys

        settings = Settings(database_url=f"sqlite:///{path}", lease_seconds=3600)
        self.db = Database(settings.database_url)
        upgrade_to_head(self.db.engine)
        key = api_keys.create_key(self.db, role=Role.ADMIN, tenant="bench", now=utcnow()).key
        self.http = TestClient(create_app(settings, db=self.db))
        self.http.headers["Authorization"] = f"Bearer {key}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, path, json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None


def _log(name: str, low: float, high: float) -> dict[str, Any]:
    return {"name": name, "type": "float", "low": low, "high": high, "scale": "log"}


def global_space(size: Size) -> dict[str, Any]:
    """The global hyperparameters every team tunes first, at the proxy's base shape."""
    init = math.sqrt(2.0 / size.proxy[0])
    return {
        "parameters": [
            _log("lr", 2.0**-9, 2.0**-1),
            _log("wd", 1e-4, 0.3),
            _log("init_std.hidden", init / 4, init * 4),
            _log("mult.readout", 2.0**-3, 2.0**3),
            {"name": "beta2", "type": "float", "low": 0.9, "high": 0.999},
        ]
    }


def _scale(param: str, size: Size, shape: tuple[int, int]) -> dict[str, Any]:
    return {"parameterization": param, "proxy": _shape(shape, size.steps, size.tokens_per_step)}


def run_study(
    svc: Service,
    runner: Runner,
    size: Size,
    study_id: str,
    shape: tuple[int, int],
    parameterization: str,
    budget: int,
    fixed: dict[str, Any],
    label: str,
    *,
    base: tuple[int, int] | None = None,
    replicates: int = 1,
    finalists: bool = True,
) -> dict[str, Any]:
    """Two workers lease, train and report until ``budget`` trials; then name a best.

    Values are base values at ``base`` (default: the shape trained). With
    ``replicates`` > 1 the study queues each point that many times in a row, and trial
    number n trains on search seed ``n % replicates``, as a worker seeds trials apart.
    Returns the best trial's params, after re-running the top three on finalist seeds
    when ``finalists``.
    """
    done = 0
    while done < budget:
        batch = []
        for w in ("w0", "w1")[: min(2, budget - done)]:
            got = svc.call(
                "POST", f"/v1/studies/{study_id}/suggestions", {"worker_id": w, "count": 1}
            )
            batch += [(w, t) for t in got["trials"]]
        if not batch:
            break
        jobs = [
            Job(
                tuple(sorted({**fixed, **t["params"]}.items())),
                parameterization, base or shape, shape, size.steps, size.seq, size.seqs,
                SEARCH_SEED + t["number"] % replicates, size.device,
            )
            for _, t in batch
        ]  # fmt: skip
        for (w, t), out in zip(batch, runner.run(jobs, label), strict=True):
            if out["loss"] is None:
                svc.call(
                    "POST",
                    f"/v1/trials/{t['id']}/infeasible",
                    {"worker_id": w, "reason": "diverged"},
                )
            else:
                svc.call(
                    "POST", f"/v1/trials/{t['id']}/complete",
                    {"worker_id": w, "metrics": {"val_loss": out["loss"]}},
                )  # fmt: skip
            done += 1
    trials = svc.call(
        "GET", f"/v1/studies/{study_id}/trials?state=completed&order_by=value&page_size=1000"
    )
    top = sorted(trials["items"], key=lambda t: t["result"]["metrics"]["val_loss"])[:3]
    if not finalists:
        loss = float(top[0]["result"]["metrics"]["val_loss"])
        return {"trial_id": top[0]["id"], "params": top[0]["params"], "finalist_loss": loss}
    finals = []
    for t in top:
        jobs = [
            Job(
                tuple(sorted({**fixed, **t["params"]}.items())),
                parameterization, shape, shape, size.steps, size.seq, size.seqs, s, size.device,
            )
            for s in FINALIST_SEEDS
        ]  # fmt: skip
        losses = [
            o["loss"] if o["loss"] is not None else math.inf
            for o in runner.run(jobs, label + " finalists")
        ]
        finals.append((float(np.mean(losses)), t))
    loss, best = min(finals, key=lambda x: x[0])
    return {"trial_id": best["id"], "params": best["params"], "finalist_loss": loss}


def create_study(
    svc: Service,
    base: dict[str, Any],
    name: str,
    family: str | None,
    space: dict[str, Any],
    algorithm: str,
    scale: dict[str, Any],
) -> str:
    body = {**base, "name": name, "family": family, "space": space}
    body |= {"algorithm": algorithm, "scale": scale}
    return str(svc.call("POST", "/v1/studies", body)["id"])


def search(size: Size, runner: Runner, workdir: pathlib.Path) -> dict[str, Any]:
    """All proxy-side work: the global, SP, per-module and ladder studies; frozen arms."""

    svc = Service(workdir / "bench.db")
    family = f"{FAMILY}-{size.name}"
    base = {"objective": {"metric": "val_loss", "goal": "minimize"}, "seed": 0}
    out: dict[str, Any] = {}
    t0 = time.time()
    print("global study (a) at the proxy", flush=True)
    gid = create_study(
        svc, base, "global", family, global_space(size), "gp", _scale("completep", size, size.proxy)
    )
    out["a"] = run_study(
        svc, runner, size, gid, size.proxy, "completep", size.global_trials, {}, "a"
    )
    out["a_study"] = gid
    print("SP control study (d)", flush=True)
    sid = create_study(
        svc, base, "global-sp", None, global_space(size), "gp", _scale("sp", size, size.proxy)
    )
    out["d"] = run_study(svc, runner, size, sid, size.proxy, "sp", size.global_trials, {}, "d")
    print("per-module study (b) from (a), POST /refine", flush=True)
    child = svc.call("POST", f"/v1/studies/{gid}/refine", {"max_trials": size.refine_trials})
    rid = child["id"]
    out["b"] = run_study(
        svc, runner, size, rid, size.proxy, "completep", size.refine_trials, {}, "b"
    )
    out["refine_space"] = child["space"]
    out |= ladder_stage(svc, runner, size, family, base, out, child["space"])
    ex = {
        arm: svc.call(
            "POST",
            f"/v1/studies/{sid_}/extrapolate",
            {"target": _target_axes(size), "use_ladder": False, "trial_id": out[arm]["trial_id"]},
        )
        for arm, sid_ in (("a", gid), ("b", rid), ("d", sid))
    }
    ex["c"] = _product(svc, size, rid, out["b"]["trial_id"])
    out["extrapolations"] = ex
    out["arms"] = {
        arm: to_base(ex[arm], size, "sp" if arm == "d" else "completep") for arm in "abcd"
    }
    out["search_seconds"] = time.time() - t0
    return out


def _target_axes(size: Size) -> dict[str, int]:
    return {"width": size.target[0], "depth": size.target[1]}


def _product(svc: Service, size: Size, study_id: str, trial_id: str) -> dict[str, Any]:
    """(c): what ``POST /extrapolate`` hands out by default for the per-module study."""
    return dict(
        svc.call(
            "POST",
            f"/v1/studies/{study_id}/extrapolate",
            {"target": _target_axes(size), "trial_id": trial_id},
        )
    )


def ladder_stage(
    svc: Service,
    runner: Runner,
    size: Size,
    family: str,
    base: dict[str, Any],
    found: dict[str, Any],
    refine_space: dict[str, Any],
    *,
    width_rungs: bool = True,
) -> dict[str, Any]:
    """The rungs ``scaling.ladder_plan`` recommends, run into the family; its ladder.

    Depth rungs: ``POST /rungs`` on (a)'s study and trial (the global LR on the plan's
    grid, every other value pinned at (a)'s, each point queued once per replicate seed).
    Width rungs: ``local`` over the
    per-module space around (b)'s best, mapped by the rules.
    """
    from hpo_service.domain.shape import ModelShape
    from hpo_service.scaling.ladder_plan import ladder_plan

    shape = lambda wd: ModelShape(width=wd[0], depth=wd[1])  # noqa: E731
    plan = ladder_plan(shape(size.proxy), shape(size.target))
    created = svc.call(
        "POST",
        f"/v1/studies/{found['a_study']}/rungs",
        {"target": _target_axes(size), "trial_id": found["a"]["trial_id"]},
    )["studies"]
    for rung in created:
        wd = (rung["scale"]["proxy"]["width"], rung["scale"]["proxy"]["depth"])
        print(f"depth rung {wd}: POST /rungs, the LR on its grid, others pinned", flush=True)
        queued = sum(rung["trial_counts"].values())
        run_study(
            svc, runner, size, rung["id"], wd, "completep", queued, {}, f"rung w{wd[0]} d{wd[1]}",
            base=size.proxy, replicates=plan.replicates, finalists=False,
        )  # fmt: skip
    for rung in plan.width if width_rungs else ():
        wd = (int(rung.width or 0), size.proxy[1])
        print(f"width rung {wd}: the per-module space around (b)'s best, mapped", flush=True)
        mapped_b = _mapped(found["b"]["params"], size, size.proxy, wd)
        names = [
            p["name"]
            for p in refine_space["parameters"]
            if p.get("scale") == "log" and p.get("type") == "float" and p["name"] in mapped_b
        ]
        space = {
            "parameters": [
                _log(n, float(mapped_b[n]) * 2.0**-1.5, float(mapped_b[n]) * 2.0**1.5)
                for n in names
            ]
        }
        wid = create_study(
            svc,
            base,
            f"module-rung-w{wd[0]}",
            family,
            space,
            "local",
            _scale("completep", size, wd),
        )
        svc.call("POST", f"/v1/studies/{wid}/trials", {"params": {n: mapped_b[n] for n in names}})
        fixed = {k: v for k, v in mapped_b.items() if k not in names}
        run_study(
            svc, runner, size, wid, wd, "completep", size.width_rung_trials, fixed, f"rung w{wd[0]}"
        )
    return {
        "ladder_plan": {
            "depth": [s.depth for s in plan.depth],
            "width": [s.width for s in plan.width],
            "lr_offsets": list(plan.lr_offsets),
            "replicates": plan.replicates,
        },
        "ladder": svc.call("GET", f"/v1/families/{family}/ladder"),
    }


def refresh_ladder(
    size: Size, runner: Runner, workdir: pathlib.Path, old: dict[str, Any]
) -> dict[str, Any]:
    """Re-measure the ladder and re-derive (c), keeping the frozen (a), (b) and (d).

    For a size whose target runs were already spent on (a) and the oracle: a fresh family
    holds (a)'s and (b)'s frozen bests as completed trials (the per-module study over the
    space ``POST /refine`` made in the search; its pinned globals are the ones per-role
    values fall back to), then the plan's rungs; (c) is ``POST /extrapolate`` on the
    per-module study. The global and per-module studies hold too few trials to count on
    the ladder here, so the two width rungs alone could only fit a line through two
    points, which gives no verdict: they are not run, and every per-role value stays at
    its global value, as it did in the search.
    """
    svc = Service(workdir / "bench.db")
    family = f"{FAMILY}-{size.name}"
    base = {"objective": {"metric": "val_loss", "goal": "minimize"}, "seed": 0}
    t0 = time.time()
    scale = _scale("completep", size, size.proxy)
    gid = create_study(svc, base, "global", family, global_space(size), "gp", scale)
    rid = create_study(svc, base, "per-module", family, old["refine_space"], "local", scale)
    trial_ids = {}
    for arm, study in (("a", gid), ("b", rid)):
        body = {"params": old[arm]["params"],
                "result": {"metrics": {"val_loss": old[arm]["finalist_loss"]}}}  # fmt: skip
        trial_ids[arm] = svc.call("POST", f"/v1/studies/{study}/trials", body)["id"]
    out = {k: v for k, v in old.items() if k not in ("ladder", "ladder_plan")}
    found = {**old, "a": {**old["a"], "trial_id": trial_ids["a"]}, "a_study": gid}
    out |= ladder_stage(
        svc, runner, size, family, base, found, old["refine_space"], width_rungs=False
    )
    ex = dict(old["extrapolations"])
    ex["c"] = _product(svc, size, rid, trial_ids["b"])
    out["extrapolations"] = ex
    out["arms"] = {**old["arms"], "c": to_base(ex["c"], size, "completep")}
    out["ladder_seconds"] = time.time() - t0
    return out


def _mapped(
    params: dict[str, Any], size: Size, base: tuple[int, int], to: tuple[int, int]
) -> dict[str, Any]:
    """Values tuned at ``base`` as base values at ``to`` (the rules applied by the product)."""
    from hpo_service.scaling import extrapolate

    ex = extrapolate(params, _scale("completep", size, base), {"width": to[0], "depth": to[1]})
    return dict(ex.params)


def to_base(ex: dict[str, Any], size: Size, parameterization: str) -> dict[str, Any]:
    """The values ``extrapolate`` handed out at the target, as base values at the proxy.

    The target is trained through the torch helper with the proxy as its base shape, so
    that defaults the user never tuned (readout init, ε) follow the rules the same way in
    every arm; dividing each handed-out value by the plain rule's factor gives the base
    value the helper maps back to exactly that target value.
    """
    from hpo_service.domain.shape import parse_shape
    from hpo_service.scaling.extrapolate import scale_value, shape_multipliers
    from hpo_service.scaling.naming import parse_name
    from hpo_service.scaling.rules import build_table

    table = build_table(parameterization, "multiplier", "adamw")
    m = shape_multipliers(
        parse_shape(_shape(size.proxy, size.steps, size.tokens_per_step), ("p",)),
        parse_shape(_shape(size.target, size.steps, size.tokens_per_step), ("t",)),
    )
    out: dict[str, Any] = {}
    for name, value in ex["params"].items():
        parsed = parse_name(name)
        if isinstance(value, str) or parsed.hparam is None or parsed.kind == "unknown":
            out[name] = value
            continue
        unit = scale_value(table, parsed.hparam, parsed.role, 0.5, m)
        if parsed.hparam in ("beta1", "beta2"):
            out[name] = 1.0 - (1.0 - float(value)) / (unit.factor if unit.factor else 1.0)
        else:
            out[name] = float(value) / unit.factor
    return out


# --- target runs and statistics --------------------------------------------------------------
def _target_jobs(
    size: Size,
    params: dict[str, Any],
    param: str,
    seeds: Iterable[int],
    *,
    max_steps: int | None = None,
) -> list[Job]:
    return [
        Job(tuple(sorted(params.items())), param, size.proxy, size.target, size.steps, size.seq,
            size.seqs, s, size.device, max_steps, True)
        for s in seeds
    ]  # fmt: skip


def _boot(values: np.ndarray, stat: Callable[[np.ndarray], float], n: int = 2000) -> list[float]:
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(values), (n, len(values)))
    boots = np.array([stat(values[i]) for i in idx])
    boots = boots[np.isfinite(boots)]
    return [
        float(stat(values)),
        float(np.percentile(boots, 2.5)),
        float(np.percentile(boots, 97.5)),
    ]


def _first_reach(steps: np.ndarray, curve: np.ndarray, level: float) -> float:
    """First step (linear interpolation between evaluations) where ``curve`` ≤ ``level``."""
    below = np.nonzero(curve <= level)[0]
    if len(below) == 0:
        return math.inf
    i = int(below[0])
    if i == 0:
        return float(steps[0])
    x0, x1, y0, y1 = steps[i - 1], steps[i], curve[i - 1], curve[i]
    return float(x0 + (y0 - level) / (y0 - y1) * (x1 - x0)) if y0 != y1 else float(x1)


def speedup(
    curves_a: np.ndarray, curves_x: np.ndarray, steps: np.ndarray, total: int
) -> list[float]:
    """S = T / first step where x's mean curve reaches a's final mean; seed-bootstrap CI."""

    def s(idx: np.ndarray) -> float:
        level = float(np.mean(curves_a[idx, -1]))
        return total / _first_reach(steps, np.mean(curves_x[idx], axis=0), level)

    n = curves_a.shape[0]
    rng = np.random.default_rng(1)
    boots = [s(rng.integers(0, n, n)) for _ in range(2000)]
    return [s(np.arange(n)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def _vertex(offsets: np.ndarray, losses: np.ndarray) -> float:
    """Parabola vertex through the best offset and its neighbours (the best if at an end)."""
    i = int(np.argmin(losses))
    if i in (0, len(losses) - 1):
        return float(offsets[i])
    a, b, _ = np.polyfit(offsets[i - 1 : i + 2], losses[i - 1 : i + 2], 2)
    return (
        float(np.clip(-b / (2 * a), offsets[i - 1], offsets[i + 1])) if a > 0 else float(offsets[i])
    )


def evaluate(
    size: Size,
    runner: Runner,
    frozen: dict[str, Any],
    seeds: Sequence[int],
    arm_names: Sequence[str] = ("a", "c", "o", "b", "d"),
) -> dict[str, Any]:
    """Train the arms at the target on ``seeds``; oracle sweep on the oracle seeds first."""
    arms = dict(frozen["arms"])
    a = arms["a"]
    lr_key = "lr.hidden"
    sweep: dict[float, list[float]] = {}

    def measure(off: float) -> None:
        p = {k: (v * 2.0**off if k.startswith("lr.") else v) for k, v in a.items()}
        outs = runner.run(_target_jobs(size, p, "completep", ORACLE_SEEDS), f"oracle {off:+.2f}")
        sweep[off] = [o["loss"] if o["loss"] is not None else math.inf for o in outs]

    for off in size.oracle_offsets:
        measure(off)
    # A sweep whose best point is one of its ends has not found the optimum: extend it
    # by half an octave at a time on that side (at most three times).
    for _ in range(3):
        offs = sorted(sweep)
        best = min(offs, key=lambda o: float(np.mean(sweep[o])))
        if best not in (offs[0], offs[-1]):
            break
        measure(best - 0.5 if best == offs[0] else best + 0.5)
    offs_sorted = sorted(sweep)
    offs = np.array(offs_sorted)
    means = np.array([np.mean(sweep[o]) for o in offs_sorted])
    best_off = _vertex(offs, means)
    arms["o"] = {k: (v * 2.0**best_off if k.startswith("lr.") else v) for k, v in a.items()}
    per_arm: dict[str, Any] = {}
    for arm in arm_names:
        param = "sp" if arm == "d" else "completep"
        outs = runner.run(_target_jobs(size, arms[arm], param, seeds), f"target {arm}")
        per_arm[arm] = {
            "losses": [o["loss"] if o["loss"] is not None else math.inf for o in outs],
            "curves": [o["curve"] for o in outs],
            "values": arms[arm],
        }
    return {"oracle_sweep": {str(k): v for k, v in sweep.items()}, "oracle_offset": best_off,
            "arms": per_arm, "lr_key": lr_key}  # fmt: skip


def summarise(
    size: Size, runner: Runner, frozen: dict[str, Any], ev: dict[str, Any], *, compress: bool = True
) -> dict[str, Any]:
    """The report's figures from the arms ``evaluate`` trained (b and d are optional)."""
    arms = ev["arms"]
    loss = {k: np.array(v["losses"]) for k, v in arms.items()}
    curves = {
        k: np.array([[y for _, y in c] for c in v["curves"]])
        for k, v in arms.items()
        if all(v["curves"])
    }
    steps = np.array([s for s, _ in arms["a"]["curves"][0]])
    out: dict[str, Any] = {"per_arm": {}}
    for k, v in loss.items():
        out["per_arm"][k] = {
            "final": _boot(v, np.mean),
            "losses": v.tolist(),
            "values": arms[k]["values"],
        }
    out["transfer_regret"] = _boot(loss["c"] - loss["o"], np.mean)
    out["never_worse"] = _boot(loss["c"] - loss["a"], np.mean)
    if "b" in loss:
        out["per_module_minus_global"] = _boot(loss["b"] - loss["a"], np.mean)
    c_lr = float(arms["c"]["values"]["lr.hidden"])
    o_lr = float(arms["o"]["values"]["lr.hidden"])
    out["lr_error_octaves"] = math.log2(c_lr / o_lr)
    out["oracle_offset_octaves"] = ev["oracle_offset"]
    sweep = ev["oracle_sweep"]
    out["a_fairly_tuned"] = {
        k: float(np.mean(sweep[k])) for k in ("-1.0", "0.0", "1.0") if k in sweep
    }
    sp = {
        k: speedup(curves["a"], curves[k], steps, size.steps)
        for k in ("b", "c", "o")
        if k in curves
    }
    out["speedups"] = sp
    best_arm = min((k for k in ("b", "c") if k in loss), key=lambda k: float(np.mean(loss[k])))
    out["best_arm"] = best_arm
    out["speedup"], out["speedup_ci"] = sp[best_arm][0], sp[best_arm][1:]
    out["curve_steps"] = steps.tolist()
    out["mean_curves"] = {k: np.mean(v, axis=0).tolist() for k, v in curves.items()}
    if not compress:
        return out
    compressed = round(size.steps / COMPRESSION)
    outs = runner.run(
        _target_jobs(
            size, arms[best_arm]["values"], "completep", TARGET_SEEDS, max_steps=compressed
        ),
        "compressed",
    )
    comp = np.array([o["loss"] if o["loss"] is not None else math.inf for o in outs])
    out["compressed_steps"] = compressed
    out["compressed_minus_global"] = _boot(comp[: len(loss["a"])] - loss["a"], np.mean)
    return out


def shape_ladder(size: Size, runner: Runner, frozen: dict[str, Any]) -> dict[str, Any]:
    """Δ = (b) − (a) at the proxy and at intermediate shapes: which axis erodes the gain.

    Both arms' proxy values go through the plain rules (the torch helper with the proxy
    as base shape), two target seeds per shape.
    """
    rows = {}
    for wd in (size.proxy, *size.ladder_shapes):
        res = {}
        for arm in ("a", "b"):
            values = frozen[arm]["params"]
            jobs = [
                Job(tuple(sorted(values.items())), "completep", size.proxy, wd,
                    size.steps, size.seq, size.seqs, s, size.device)
                for s in TARGET_SEEDS[:2]
            ]  # fmt: skip
            res[arm] = np.array(
                [o["loss"] for o in runner.run(jobs, f"ladder w{wd[0]} d{wd[1]} {arm}")],
                dtype=float,
            )
        rows[f"w{wd[0]} d{wd[1]}"] = float(np.mean(res["b"] - res["a"]))
    return rows


def proxy_speedup(size: Size, runner: Runner, frozen: dict[str, Any]) -> dict[str, Any]:
    """(b) against (a) at the proxy itself, on the target seeds: the gain before transfer."""
    curves = {}
    finals = {}
    for arm in ("a", "b"):
        values = frozen[arm]["params"]
        jobs = [
            Job(tuple(sorted(values.items())), "completep", size.proxy, size.proxy, size.steps,
                size.seq, size.seqs, s, size.device, None, True)
            for s in TARGET_SEEDS
        ]  # fmt: skip
        outs = runner.run(jobs, f"proxy {arm}")
        curves[arm] = np.array([[y for _, y in o["curve"]] for o in outs])
        finals[arm] = np.array([o["loss"] for o in outs], dtype=float)
    steps = np.array([s for s, _ in outs[0]["curve"]])
    return {
        "b_minus_a": _boot(finals["b"] - finals["a"], np.mean),
        "speedup": speedup(curves["a"], curves["b"], steps, size.steps),
    }


def length_probe(
    size: Size,
    runner: Runner,
    steps: int,
    workdir: pathlib.Path,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole pipeline again with ``steps`` steps: does per-module room grow with length?

    Three target seeds and arms (a), (b), (c) only (no oracle), to keep it affordable.
    With ``old`` (an earlier probe's frozen arms), only the ladder and (c) are redone.
    """
    longer = Size(**{**size.__dict__, "steps": steps})
    frozen = (
        refresh_ladder(longer, runner, workdir, old)
        if old is not None
        else search(longer, runner, workdir)
    )
    out: dict[str, Any] = {"steps": steps}
    losses = {}
    for arm in ("a", "b", "c"):
        outs = runner.run(
            _target_jobs(longer, frozen["arms"][arm], "completep", TARGET_SEEDS[:3]),
            f"probe {steps} {arm}",
        )
        losses[arm] = np.array([o["loss"] if o["loss"] is not None else math.inf for o in outs])
    out["b_minus_a"] = _boot(losses["b"] - losses["a"], np.mean)
    out["c_minus_a"] = _boot(losses["c"] - losses["a"], np.mean)
    out["final"] = {k: v.tolist() for k, v in losses.items()}
    out["frozen"] = frozen  # the probe's own arms, ladder and extrapolations
    return out


def verify(seeds: list[int], runner: Runner) -> dict[str, Any]:
    """Re-train (a), (c) and (o) at the default target on ``seeds``, with frozen values."""
    data = json.loads(OUT.read_text()).get("default", {}) if OUT.exists() else {}
    if "per_arm" not in data:
        raise SystemExit(
            "--verify re-trains the frozen arms of the default size: run --size default first"
        )
    size = SIZES["default"]
    outs = {
        arm: runner.run(
            _target_jobs(size, data["per_arm"][arm]["values"], "completep", seeds), f"verify {arm}"
        )
        for arm in ("a", "c", "o")
    }
    loss = {
        k: np.array([o["loss"] if o["loss"] is not None else math.inf for o in v])
        for k, v in outs.items()
    }
    curves = {k: np.array([[y for _, y in o["curve"]] for o in v]) for k, v in outs.items()}
    steps = np.array([s for s, _ in outs["a"][0]["curve"]])
    return {
        "seeds": seeds,
        "delta": (loss["c"] - loss["a"]).tolist(),
        "regret": (loss["c"] - loss["o"]).tolist(),
        "speedup": speedup(curves["a"], curves["c"], steps, size.steps)[0],
    }


def table(name: str, r: dict[str, Any]) -> None:
    print(f"\n== {name}: final target loss (mean [95% CI] over {len(TARGET_SEEDS)} seeds)")
    labels = {"a": "global, plain rules", "b": "per-module, plain rules", "c": "product default",
              "d": "SP control", "o": "oracle LR at the target"}  # fmt: skip
    for k, v in r["per_arm"].items():
        m, lo, hi = v["final"]
        print(f"  ({k}) {labels[k]:<26} {m:.4f} [{lo:.4f}, {hi:.4f}]")
    f = lambda x: f"{x[0]:+.4f} [{x[1]:+.4f}, {x[2]:+.4f}]"  # noqa: E731
    print(f"  transfer regret (c − o):   {f(r['transfer_regret'])}")
    print(f"  LR error (c over o):        {r['lr_error_octaves']:+.2f} octave")
    print(f"  never worse (c − a):       {f(r['never_worse'])}")
    if "per_module_minus_global" in r:
        print(f"  per-module (b − a):        {f(r['per_module_minus_global'])}")
    lo, hi = r["speedup_ci"]
    print(f"  speed-up S ({r['best_arm']}):          {r['speedup']:.2f} [{lo:.2f}, {hi:.2f}]")
    if "compressed_minus_global" in r:
        print(f"  compressed − global:       {f(r['compressed_minus_global'])}")
    print(f"  (a) LR ×2^-1/×1/×2^+1 at target: {r['a_fairly_tuned']}")
    print(f"  Δ (b − a) by shape: {r.get('shape_ladder')}")
    print(f"  at the proxy: {r.get('proxy')}")


def plot(data: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [k for k in ("tiny", "default", "gpu") if k in data and "mean_curves" in data[k]]
    fig, axes = plt.subplots(
        2, max(1, len(sizes)), figsize=(6 * max(1, len(sizes)), 8), squeeze=False
    )
    for i, name in enumerate(sizes):
        r = data[name]
        ax = axes[0][i]
        steps = r["curve_steps"]
        for k, ys in r["mean_curves"].items():
            ax.plot(steps, ys, label=f"({k}) {r['per_arm'][k]['final'][0]:.3f}")
        ax.set_ylim(
            min(min(v) for v in r["mean_curves"].values()) - 0.02,
            min(v[len(v) // 4] for v in r["mean_curves"].values()),
        )
        ax.set_title(f"{name}: target validation loss (mean of seeds)")
        ax.set_xlabel("step")
        ax.legend()
        ax = axes[1][i]
        ladder = r.get("shape_ladder", {})
        ax.bar(list(ladder), list(ladder.values()))
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{name}: Δ (per-module − global) by shape")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _cached(size: Size, runner: Runner, frozen: dict[str, Any], arm: str) -> bool:
    """Whether every target run of ``arm`` is already in the run cache."""
    param = "sp" if arm == "d" else "completep"
    jobs = _target_jobs(size, frozen["arms"][arm], param, TARGET_SEEDS)
    return all(j.key() in runner.cache for j in jobs)


def _save(key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Write one size's entry, re-reading the file so that runs of other sizes survive."""
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data[key] = entry
    OUT.write_text(json.dumps(data, indent=1, default=float))
    return dict(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--procs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--lengths", default="", help="length probe, e.g. 1200,2400 (tiny)")
    parser.add_argument("--verify", default="", help="comma-separated seeds: re-train a, c, o")
    parser.add_argument("--research", action="store_true", help="search again even if frozen")
    parser.add_argument(
        "--search-only", action="store_true", help="freeze the arms, print them and stop"
    )
    parser.add_argument(
        "--core",
        action="store_true",
        help="arms (a), (c) and the oracle (and (b), (d) if cached); no compressed run or "
        "shape ladder",
    )
    parser.add_argument(
        "--refresh-ladder",
        action="store_true",
        help="re-measure the ladder and re-derive (c) from the frozen (a) and (b)",
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    runner = Runner(args.procs)
    if args.verify:
        print(json.dumps(verify([int(x) for x in args.verify.split(",")], runner)))
        return
    size = SIZES[args.size]
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    key = "gpu" if size.name == "gpu" else size.name
    entry = data.get(key, {})
    with tempfile.TemporaryDirectory() as tmp:
        frozen = entry.get("frozen")
        if frozen is not None and args.refresh_ladder and not args.research:
            frozen = refresh_ladder(size, runner, pathlib.Path(tmp), frozen)
            entry["frozen"] = frozen
            data = _save(key, entry)
            print(f"(c) re-derived after {frozen['ladder_seconds'] / 60:.1f} min", flush=True)
        if frozen is None or args.research:
            frozen = search(size, runner, pathlib.Path(tmp))
            entry = {"frozen": frozen}
            data = _save(key, entry)
            print(
                f"arms frozen after {frozen['search_seconds'] / 60:.1f} min of search", flush=True
            )
        if args.search_only:
            print(json.dumps({"arms": frozen["arms"], "ladder": frozen["ladder"]}, indent=1))
            return
        arm_names: tuple[str, ...] = ("a", "c", "o", "b", "d")
        if args.core:  # (b) and (d) only when their target runs are all in the cache
            arm_names = ("a", "c", "o", *(k for k in "bd" if _cached(size, runner, frozen, k)))
        ev = evaluate(size, runner, frozen, TARGET_SEEDS, arm_names)
        r = summarise(size, runner, frozen, ev, compress=not args.core)
        r["arms_run"] = list(arm_names)
        if not args.core:
            r["shape_ladder"] = shape_ladder(size, runner, frozen)
            r["proxy"] = proxy_speedup(size, runner, frozen)
        r["oracle_sweep"] = ev["oracle_sweep"]
        probes = [int(x) for x in args.lengths.split(",") if x]
        r["length_probe"] = entry.get("length_probe", {})
        for steps in probes:
            sub = pathlib.Path(tmp) / f"probe{steps}"
            sub.mkdir()
            before = r["length_probe"].get(str(steps), {}).get("frozen")
            r["length_probe"][str(steps)] = length_probe(
                size, runner, steps, sub, before if args.refresh_ladder else None
            )
    if args.core:  # figures of arms not run this time would be stale
        for stale in ("per_module_minus_global", "compressed_minus_global", "compressed_steps",
                      "shape_ladder", "proxy"):  # fmt: skip
            entry.pop(stale, None)
    entry.update(r)
    entry["frozen"] = frozen
    entry["shapes"] = {"proxy": size.proxy, "target": size.target, "steps": size.steps,
                       "tokens_per_step": size.tokens_per_step}  # fmt: skip
    data = _save(key, entry)
    table(key, entry)
    plot(data, RESULTS / "e2e_transfer.png")
    print(f"wrote {OUT} and {RESULTS / 'e2e_transfer.png'}")


if __name__ == "__main__":
    sys.exit(main())
