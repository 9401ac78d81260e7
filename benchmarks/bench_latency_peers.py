"""Fresh-suggestion latency against Optuna's GPSampler, in-process and through the HTTP API.

The protocol of issue #18 item 2: d = 12, ``n`` completed trials (100 and 300), 8 pending
(running) trials, on three functions of ``[0, 1]^12``:

- ``hartmann6_pad6``: Hartmann-6 on the first six coordinates, six irrelevant ones;
- ``styblinski_tang``: Styblinski-Tang on all twelve (every dimension active, multimodal);
- ``smooth``: ``bench_latency.py``'s function (every dimension active, smooth).

The stored history is what a study of that age holds, not a uniform sample: after 20
uniform points, each new point is a Gaussian step from the best so far (step sizes
shrinking from 20% to 2% of the cube) or, one time in three, a uniform point. Every
cell (function, n, path) runs in its own process. Each timed round, both peers see the
same history, and which one goes first alternates from round to round:

- **in-process**: ours is ``make_designer(config)``, ``update(completed, pending)``,
  ``suggest(1)``; Optuna's is ``study.ask()`` on an in-memory study holding the same
  completed and running trials (its sampler object, and so its cached GP, lives across
  asks: Optuna at its best);
- **api**: ours is ``POST /v1/studies/{id}/suggestions`` on the in-process app (FastAPI
  ``TestClient``) over a SQLite file holding the history; the suggestion pool's deadline
  is raised so every answer is the designer's own (fresh; checked on every answer);
  Optuna's ask mirrors the same history.

After each round the oldest pending trial completes (with its true value) and ours
becomes pending, in both peers' histories, so every request refits to new data and
pending stays at 8. Optuna's own asked trial is told ``FAIL`` (GPSampler ignores failed
trials), so it never enters the shared history. One warm-up round is not timed. Both
peers run on one torch thread. Optuna's ``GPSampler`` uses its batched L-BFGS-B (the
``greenlet`` package is installed; the cell checks it).

The api cells also split each request's time into phases by timing the functions that
do them: database read of the history (``_snapshot``), encoding the training data,
hyperparameter fit, building the acquisition function, optimising it, storing the
suggestion (``_store_new``); "other" is the rest (HTTP, auth, transactions, the pool's
thread hand-off, lease bookkeeping).

Prints a table, writes ``--out`` (JSON) and a PNG next to it.

Usage::

    .venv/bin/python benchmarks/bench_latency_peers.py
    .venv/bin/python benchmarks/bench_latency_peers.py --ns 300 --functions smooth --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_latency import _f as _smooth  # noqa: E402
from bench_latency import _pct, _run_cell, cell_process_setup  # noqa: E402
from bench_optimizers import _hartmann6  # noqa: E402

RESULTS = Path(__file__).parent / "results"
D = 12
N_PENDING = 8
PATHS = ("inprocess", "api")
PHASES = ("db_read", "encode", "fit", "acqf_build", "acqf_optimize", "store")


def _hartmann6_pad6(x: np.ndarray) -> float:
    return _hartmann6({f"x{i}": x[i] for i in range(6)})


def _styblinski_tang(x: np.ndarray) -> float:
    z = 10.0 * x - 5.0
    return float(0.5 * np.sum(z**4 - 16 * z**2 + 5 * z))


FUNCTIONS: dict[str, Callable[[np.ndarray], float]] = {
    "hartmann6_pad6": _hartmann6_pad6,
    "styblinski_tang": _styblinski_tang,
    "smooth": lambda x: float(_smooth(x)),
}


def realistic_history(f: Callable[[np.ndarray], float], n: int, seed: int) -> np.ndarray:
    """``n x D`` points of a study that has been searching for a while (module docstring)."""
    rng = np.random.default_rng(seed)
    xs = [rng.random(D) for _ in range(min(n, 20))]
    ys = [f(x) for x in xs]
    for i in range(len(xs), n):
        if rng.random() < 1 / 3:
            x = rng.random(D)
        else:
            sigma = 0.2 * (0.1 ** (i / max(n, 1)))
            x = np.clip(xs[int(np.argmin(ys))] + rng.normal(0.0, sigma, D), 0.0, 1.0)
        xs.append(x)
        ys.append(f(x))
    return np.array(xs)


def _params(x: np.ndarray) -> dict[str, float]:
    return {f"x{j}": float(v) for j, v in enumerate(x)}


def _vector(params: dict[str, Any]) -> np.ndarray:
    return np.array([float(params[f"x{j}"]) for j in range(D)])


class _OptunaMirror:
    """An in-memory Optuna study that holds the same completed and running trials."""

    def __init__(self, completed: list[tuple[np.ndarray, float]], pending: list[np.ndarray]):
        import optuna
        from optuna.distributions import FloatDistribution
        from optuna.trial import TrialState, create_trial

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self._create, self._state = create_trial, TrialState
        self.dists = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(D)}
        self.study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=0))
        self.study.add_trials(
            [
                create_trial(params=_params(x), distributions=self.dists, value=y)
                for x, y in completed
            ]
        )
        self.running: list[int] = []
        for x in pending:
            self.add_running(x)

    def add_running(self, x: np.ndarray) -> None:
        """``x`` becomes a running trial (oldest first in ``running``)."""
        self.study.add_trial(
            self._create(params=_params(x), distributions=self.dists, state=self._state.RUNNING)
        )
        self.running.append(self.study.trials[-1].number)

    def complete_oldest(self, value: float) -> None:
        """The oldest running trial completes with ``value``."""
        self.study.tell(self.running.pop(0), value)

    def ask(self) -> float:
        """Seconds for one ask; the asked trial is failed so it leaves no trace."""
        t0 = time.perf_counter()
        trial = self.study.ask(self.dists)
        elapsed = time.perf_counter() - t0
        self.study.tell(trial, state=self._state.FAIL)
        return elapsed


class _PhaseTimer:
    """Wraps named functions of loaded modules to add up the seconds spent in each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._lock = threading.Lock()

    def wrap(self, owner: Any, attr: str, phase: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[phase] += time.perf_counter() - t0

        setattr(owner, attr, timed)

    def take(self) -> dict[str, float]:
        with self._lock:
            out, self.seconds = self.seconds, dict.fromkeys(PHASES, 0.0)
        return out


def _install_phase_timer() -> _PhaseTimer:
    from hpo_service.engine import gp
    from hpo_service.services import suggestions

    timer = _PhaseTimer()
    timer.wrap(suggestions, "_snapshot", "db_read")
    timer.wrap(suggestions, "_store_new", "store")
    timer.wrap(gp.GPDesigner, "_training_data", "encode")
    timer.wrap(gp, "fit_gp", "fit")
    timer.wrap(gp.GPDesigner, "_acquisition", "acqf_build")
    timer.wrap(gp, "maximize_acqf", "acqf_optimize")
    return timer


class _InProcess:
    """Ours without the service: a designer per request over an in-memory history."""

    def __init__(self, completed: list[tuple[np.ndarray, float]], pending: list[np.ndarray]):
        from hpo_service.domain import (
            FloatParameter,
            Objective,
            SearchSpace,
            StudyConfig,
            Trial,
            TrialState,
        )

        self._trial, self._state = Trial, TrialState
        space = SearchSpace(
            parameters=[FloatParameter(name=f"x{i}", low=0, high=1) for i in range(D)]
        )
        self.config = StudyConfig(
            space=space, objective=Objective(metric="y"), algorithm="gp", seed=0
        )
        self.completed = [self._done(x, y) for x, y in completed]
        self.pending = [self._running(x) for x in pending]

    def _done(self, x: np.ndarray, y: float) -> Any:
        i = len(getattr(self, "completed", []))
        return self._trial(
            id=f"c{i}",
            study_id="bench",
            number=i,
            params=_params(x),
            state=self._state.COMPLETED,
            result={"y": y},
        )

    def _running(self, x: np.ndarray) -> Any:
        return self._trial(
            id=f"p{time.perf_counter_ns()}",
            study_id="bench",
            number=10**6 + len(getattr(self, "pending", [])),
            params=_params(x),
            state=self._state.ACTIVE,
        )

    def request(self) -> tuple[float, np.ndarray]:
        """Seconds for one suggestion; the suggested point becomes pending."""
        from hpo_service.engine.registry import make_designer

        t0 = time.perf_counter()
        designer = make_designer(self.config, 0)
        designer.update(self.completed, self.pending)
        (s,) = designer.suggest(1)
        elapsed = time.perf_counter() - t0
        if s.metadata.get("phase") == "initial":
            raise RuntimeError("expected a model-based suggestion")
        self.pending.append(self._running(_vector(s.params)))
        return elapsed, _vector(s.params)

    def complete_oldest(self, value: float) -> None:
        """The oldest pending trial completes with ``value``."""
        oldest = self.pending.pop(0)
        self.completed.append(self._done(_vector(oldest.params), value))


class _Api:
    """Ours through the HTTP API of the in-process app on a SQLite file."""

    def __init__(self, workdir: str, completed: list[tuple[np.ndarray, float]]) -> None:
        from fastapi.testclient import TestClient

        from hpo_service.api.app import create_app
        from hpo_service.client import HPOClient
        from hpo_service.config import Settings
        from hpo_service.db.base import utcnow
        from hpo_service.db.database import Database
        from hpo_service.db.migrate import upgrade_to_head
        from hpo_service.domain import Role
        from hpo_service.engine.pool import PoolSettings
        from hpo_service.services import api_keys
        from hpo_service.services.suggestion_pool import replace_pool

        # Fresh answers only: a deadline no request reaches (the route passes the
        # settings' deadline to the pool), so the pool never answers from its store.
        replace_pool(PoolSettings(deadline_s=120.0))
        db = Database(f"sqlite:///{workdir}/hpo.db")
        upgrade_to_head(db.engine)
        now = utcnow()
        ckey = api_keys.create_key(db, role=Role.CLIENT, tenant="bench", name="c", now=now).key
        wkey = api_keys.create_key(db, role=Role.WORKER, tenant="bench", name="w", now=now).key
        settings = Settings(
            database_url=db.url, reclaim_interval_seconds=3600, suggestion_deadline_seconds=120.0
        )
        app = create_app(settings, db=db)
        self._http = TestClient(app)
        self._http.__enter__()
        client = HPOClient(api_key=ckey, http=self._http)
        self.worker = HPOClient(api_key=wkey, http=self._http)
        space = [{"name": f"x{i}", "type": "float", "low": 0.0, "high": 1.0} for i in range(D)]
        study = client.create_study(
            {
                "name": "latency",
                "objective": {"metric": "y", "goal": "minimize"},
                "space": {"parameters": space},
                "algorithm": "gp",
                "seed": 0,
            }
        )
        self.study_id = str(study["id"])
        for i in range(0, len(completed), 100):
            client.add_trials(
                self.study_id,
                [
                    {"params": _params(x), "result": {"metrics": {"y": y}}}
                    for x, y in completed[i : i + 100]
                ],
            )
        self.pending: list[tuple[str, str]] = []  # (trial id, its worker), oldest first

    def request(self) -> tuple[float, np.ndarray]:
        # A new worker id each time: a worker that holds a lease gets that trial back.
        worker_id = f"w{len(self.pending)}-{time.perf_counter_ns()}"
        t0 = time.perf_counter()
        (trial,) = self.worker.suggest(self.study_id, worker_id, 1)["trials"]
        elapsed = time.perf_counter() - t0
        meta = trial.get("metadata") or {}
        if trial.get("source") == "fallback_random" or meta.get("pooled"):
            raise RuntimeError(f"not a fresh suggestion: {trial.get('source')} {meta}")
        self.pending.append((str(trial["id"]), worker_id))
        return elapsed, _vector(trial["params"])

    def complete_oldest(self, value: float) -> None:
        trial_id, worker_id = self.pending.pop(0)
        self.worker.complete(trial_id, worker_id, {"y": value})

    def close(self) -> None:
        self._http.__exit__(None, None, None)


@contextmanager
def _workdir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench_latency_peers_") as tmp:
        yield tmp


def _check_greenlet() -> bool:
    try:
        import greenlet  # noqa: F401
    except ImportError:
        return False
    return True


def cell(function: str, n: int, path: str, repeats: int, seed: int) -> dict[str, Any]:
    """One (function, n, path) cell: ``repeats`` timed rounds after one warm-up round."""
    f = FUNCTIONS[function]
    xs = realistic_history(f, n + N_PENDING, seed)
    completed = [(x, f(x)) for x in xs[:n]]
    pending_x = list(xs[n:])
    optuna = _OptunaMirror(completed, pending_x if path == "inprocess" else [])
    ours_times: list[float] = []
    optuna_times: list[float] = []
    phases: list[dict[str, float]] = []
    with _workdir() as tmp:
        ours: _InProcess | _Api
        timer = None
        if path == "inprocess":
            ours = _InProcess(completed, pending_x)
        else:
            ours = _Api(tmp, completed)
            # Eight pending trials, proposed by the service itself (as in a live study).
            pending_x = [ours.request()[1] for _ in range(N_PENDING)]
            for x in pending_x:
                optuna.add_running(x)
            timer = _install_phase_timer()
        try:
            for r in range(repeats + 1):
                if r % 2:
                    t_optuna = optuna.ask()
                    t_ours, x_new = ours.request()
                else:
                    t_ours, x_new = ours.request()
                    t_optuna = optuna.ask()
                split = timer.take() if timer is not None else None
                if r:
                    ours_times.append(t_ours)
                    optuna_times.append(t_optuna)
                    if split is not None:
                        phases.append(split | {"other": t_ours - sum(split.values())})
                # The oldest pending trial completes; ours becomes pending, for both peers.
                value = f(pending_x.pop(0))
                pending_x.append(x_new)
                ours.complete_oldest(value)
                optuna.complete_oldest(value)
                optuna.add_running(x_new)
        finally:
            if isinstance(ours, _Api):
                ours.close()
    return {"ours": ours_times, "optuna": optuna_times, "phases": phases}


def _stats(times: list[float]) -> dict[str, float]:
    steps = np.abs(np.diff(times)) if len(times) > 1 else np.zeros(1)
    return {
        "p50_s": _pct(times, 50),
        "p90_s": _pct(times, 90),
        "max_s": max(times),
        "min_s": min(times),
        "step_median_s": float(np.median(steps)),
        "step_max_s": float(steps.max()),
    }


def _summarise(spec: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    ours, theirs = _stats(result["ours"]), _stats(result["optuna"])
    row = spec | {
        "ours": ours,
        "optuna": theirs,
        "ratio_p50": ours["p50_s"] / theirs["p50_s"],
        "ratio_p90": ours["p90_s"] / theirs["p90_s"],
        "times": {"ours": result["ours"], "optuna": result["optuna"]},
    }
    if result["phases"]:
        keys = [*PHASES, "other"]
        row["phases_mean_s"] = {k: float(np.mean([p[k] for p in result["phases"]])) for k in keys}
    return row


def _target(n: int) -> float:
    """The issue's bound on ours / GPSampler p50: 0.5 at n = 300, 1.0 at n = 100."""
    return 0.5 if n >= 300 else 1.0


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per cell: ours and Optuna's p50 / p90 / max, steps, ratios, target."""
    print(
        f"\n{'function':<16} {'n':>4} {'path':<9} | {'ours p50':>8} {'p90':>6} {'max':>6} "
        f"{'step':>6} | {'optuna p50':>10} {'p90':>6} {'max':>6} {'step':>6} | "
        f"{'p50 x':>6} {'p90 x':>6} target"
    )
    for r in rows:
        o, t = r["ours"], r["optuna"]
        met = "met" if r["ratio_p50"] <= _target(r["n"]) else "MISSED"
        print(
            f"{r['function']:<16} {r['n']:>4} {r['path']:<9} | {o['p50_s']:>8.3f} "
            f"{o['p90_s']:>6.3f} {o['max_s']:>6.3f} {o['step_median_s']:>6.3f} | "
            f"{t['p50_s']:>10.3f} {t['p90_s']:>6.3f} {t['max_s']:>6.3f} "
            f"{t['step_median_s']:>6.3f} | {r['ratio_p50']:>6.2f} {r['ratio_p90']:>6.2f} "
            f"<= {_target(r['n']):.1f} {met}"
        )
    api = [r for r in rows if "phases_mean_s" in r]
    if api:
        keys = [*PHASES, "other"]
        print(
            f"\nAPI request phases, mean ms:\n{'function':<16} {'n':>4} | "
            + " ".join(f"{k:>13}" for k in keys)
        )
        for r in api:
            ph = r["phases_mean_s"]
            print(
                f"{r['function']:<16} {r['n']:>4} | "
                + " ".join(f"{1e3 * ph[k]:>13.1f}" for k in keys)
            )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Ratio of p50s per cell against its target, and the API phase split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    labels = [f"{r['function']}\nn={r['n']} {r['path']}" for r in rows]
    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [r["ratio_p50"] for r in rows], 0.4, label="p50 ours / GPSampler")
    ax.bar(pos + 0.2, [r["ratio_p90"] for r in rows], 0.4, label="p90 ours / GPSampler")
    ax.scatter(pos, [_target(r["n"]) for r in rows], marker="_", s=400, c="k", label="target")
    ax.set_xticks(pos, labels, rotation=70, fontsize=6)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_ylabel("latency ratio (lower is faster)")
    ax.legend(fontsize=7)
    api = [r for r in rows if "phases_mean_s" in r]
    bottom = np.zeros(len(api))
    for k in [*PHASES, "other"]:
        vals = np.array([1e3 * r["phases_mean_s"][k] for r in api])
        bx.bar(np.arange(len(api)), vals, bottom=bottom, label=k)
        bottom += vals
    bx.scatter(
        np.arange(len(api)),
        [1e3 * r["optuna"]["p50_s"] for r in api],
        c="k",
        marker="x",
        label="GPSampler ask p50",
    )
    bx.set_xticks(
        np.arange(len(api)), [f"{r['function']}\nn={r['n']}" for r in api], rotation=70, fontsize=6
    )
    bx.set_ylabel("ms per API request (mean)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--functions", default=",".join(FUNCTIONS))
    parser.add_argument("--ns", default="100,300")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cell-timeout", type=float, default=900.0)
    parser.add_argument("--out", default=str(RESULTS / "latency_peers.json"))
    parser.add_argument("--cell", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.cell:
        cell_process_setup()
        if not _check_greenlet():
            raise SystemExit("greenlet is missing: GPSampler would run its sequential optimiser")
        function, n, path, repeats, seed = args.cell
        print(json.dumps(cell(function, int(n), path, int(repeats), int(seed))))
        return 0

    plan = [
        {"function": fn, "n": int(n), "path": p}
        for fn in args.functions.split(",")
        for n in args.ns.split(",")
        for p in args.paths.split(",")
    ]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i, spec in enumerate(plan, start=1):
        argv_cell = [
            spec["function"],
            str(spec["n"]),
            spec["path"],
            str(args.repeats),
            str(args.seed),
        ]
        result = _run_cell(argv_cell, args.cell_timeout, script=__file__)
        elapsed = time.perf_counter() - start
        eta = elapsed / i * (len(plan) - i)
        if result is None:
            print(f"[{i}/{len(plan)}] {spec}: failed", flush=True)
            continue
        rows.append(_summarise(spec, result))
        r = rows[-1]
        print(
            f"[{i}/{len(plan)}] {spec['function']:<16} n={spec['n']:<4} {spec['path']:<9} "
            f"ours p50 {r['ours']['p50_s']:.3f} s, GPSampler {r['optuna']['p50_s']:.3f} s, "
            f"ratio {r['ratio_p50']:.2f}  elapsed {elapsed:.0f} s, ETA {eta:.0f} s",
            flush=True,
        )
    print_table(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "d": D,
        "pending": N_PENDING,
        "repeats": args.repeats,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "torch_threads": 1,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    plot(rows, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
