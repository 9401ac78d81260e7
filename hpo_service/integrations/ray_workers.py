"""Run the worker loop on an existing Ray cluster: one actor per GPU set.

For users who outgrow one machine but already have a Ray cluster: instead of starting
``hpo worker`` on every node by hand, ``hpo ray-workers`` asks Ray for N actors, each
holding ``num_gpus`` GPUs, and each actor runs the ordinary worker loop
(``hpo_service.worker.loop.Worker``, one slot) on them. Ray does the placement; the
service still does the leasing, heartbeats and retries, exactly as for ``hpo worker``.

GPUs: the actor sets ``CUDA_VISIBLE_DEVICES`` in its own environment to the ids
``ray.get_gpu_ids()`` returns before the loop starts; a command inherits it through
``trial_environment`` and a built-in proxy, which trains in the actor's process, reads it
when torch first opens CUDA. Ray usually sets that variable itself; setting it again
keeps the guarantee when Ray is told not to (``RAY_EXPERIMENTAL_NOSET_*``).

Worker ids: ``<prefix>-<node-ip>-gpu<ids>`` for an actor that owns whole GPUs, which is
unique while the actor lives (Ray gives a GPU to one such actor at a time) and is the
same again when Ray restarts a crashed actor on the GPUs it had, so the restarted loop
is handed its own active trials first and finishes them instead of waiting for their
leases to expire. Fractional or CPU-only actors share devices, so they add
``-w<index>``. Two drivers on one study with CPU-only actors need different prefixes.

Shutdown: SIGTERM or Ctrl-C on the driver calls ``request_shutdown`` in every actor
through a remote method (the actors run two calls at once for that), then waits for
their loops to return: each loop stops its trial and releases it (``fail`` with
``retry``), so the trials are back to ``requested`` within seconds rather than a lease
later. A second signal stops waiting and kills the actors.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

import ray
from ray.exceptions import RayError

from hpo_service.worker.config import WorkerConfig
from hpo_service.worker.loop import Worker
from hpo_service.worker.ports import Sink
from hpo_service.worker.progress import JsonSink, KeyValueSink

__all__ = ["RayWorkersSpec", "WorkerActor", "actor_worker_id", "run_ray_workers"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class RayWorkersSpec:
    """What ``hpo ray-workers`` asks of the cluster.

    Attributes:
        address: the Ray cluster to join (``host:port``, ``auto`` or ``ray://...``).
        config: the worker loop's settings; ``worker_id`` and ``parallel`` are replaced in
            each actor (one slot, an id derived from where the actor landed).
        workers: number of actors.
        num_gpus_per_worker: GPUs Ray reserves for each actor (may be fractional, or 0).
        num_cpus_per_worker: CPUs Ray reserves for each actor.
        max_restarts: how often Ray restarts an actor whose process died; its loop then
            runs again under the same worker id.
        worker_prefix: the first part of every actor's worker id.
        progress: ``log`` (key=value lines) or ``json`` for the actors' and driver's events.
        verbose: also show idle polls.
        shutdown_grace: seconds to wait for the actors after asking them to stop, beyond
            the loop's own ``kill_grace``.
    """

    address: str
    config: WorkerConfig
    workers: int = 1
    num_gpus_per_worker: float = 1.0
    num_cpus_per_worker: float = 1.0
    max_restarts: int = 3
    worker_prefix: str = "ray"
    progress: str = "log"
    verbose: bool = False
    shutdown_grace: float = 10.0


def make_sink(progress: str, verbose: bool) -> Sink:
    """A line-oriented sink: actors have no terminal, Ray forwards their stdout."""
    if progress == "json":
        return JsonSink(verbose=verbose)
    return KeyValueSink(verbose=verbose)


def actor_worker_id(
    prefix: str, node_ip: str, gpu_ids: list[str], index: int, *, exclusive: bool
) -> str:
    """The lease holder id of an actor, the same again after a restart on the same GPUs.

    Args:
        prefix: ``RayWorkersSpec.worker_prefix``.
        node_ip: the IP address of the node the actor runs on.
        gpu_ids: the GPU ids Ray assigned to it (empty for a CPU-only actor).
        index: the actor's number among the driver's actors; added when the devices may
            be shared with another actor (CPU-only, or a fraction of a GPU), which would
            otherwise get the same id and be handed this actor's trials.
        exclusive: the actor holds its GPUs whole.
    """
    if not gpu_ids:
        return f"{prefix}-{node_ip}-w{index}"
    wid = f"{prefix}-{node_ip}-gpu{'_'.join(gpu_ids)}"
    return wid if exclusive else f"{wid}-w{index}"


class WorkerActor:
    """One worker loop inside one Ray actor (wrapped by ``ray.remote`` in the driver).

    A plain class, wrapped only when the driver starts actors, so that mypy sees its
    methods; the actor runs ``run`` and ``shutdown`` concurrently (``max_concurrency=2``),
    which is how a driver reaches a loop that is busy running a trial.
    """

    def __init__(self, spec: RayWorkersSpec, index: int) -> None:
        self._spec = spec
        self._index = index
        self._worker: Worker | None = None
        self._stopped = threading.Event()

    def placement(self) -> tuple[str, str]:
        """Set this actor's ``CUDA_VISIBLE_DEVICES``; return (worker id, device list)."""
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        # An empty value hides every GPU: an actor that reserved none must not use one.
        devices = ",".join(gpu_ids)
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
        wid = actor_worker_id(
            self._spec.worker_prefix,
            ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            gpu_ids,
            self._index,
            exclusive=self._spec.num_gpus_per_worker >= 1,
        )
        return wid, devices

    def run(self) -> int:
        """Run the worker loop until the study has no more work or ``shutdown`` is called.

        Returns:
            The loop's exit code (0 done or stopped, 1 errors, 2 bad configuration).
        """
        # httpx logs every request at INFO; a loop polling for hours must not.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        worker_id, devices = self.placement()
        config = replace(self._spec.config, worker_id=worker_id, parallel=1)
        sink = make_sink(self._spec.progress, self._spec.verbose)
        sink.emit("ray.actor", index=self._index, worker=worker_id, gpus=devices or None)
        worker = Worker(config, sink)
        self._worker = worker
        if self._stopped.is_set():  # shutdown came while the loop was being built
            return EXIT_OK
        return worker.run()

    def shutdown(self) -> None:
        """Ask the loop to stop leasing and release its trial; returns at once."""
        self._stopped.set()
        worker = self._worker
        if worker is not None:
            worker.request_shutdown("driver")


class _Signals:
    """Counts SIGTERM/SIGINT on the driver; the main loop polls it between waits."""

    def __init__(self) -> None:
        self.count = 0
        self.name = ""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.name = signal.Signals(signum).name


@contextmanager
def _handling(signals: _Signals) -> Iterator[None]:
    """Route SIGTERM and SIGINT to ``signals`` (replacing Ray's handlers) for a while."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers; other callers keep theirs
        return
    previous = {sig: signal.signal(sig, signals) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _outcome(ref: Any, index: int, sink: Sink) -> int:
    """The exit code an actor's ``run`` returned, or 1 when the actor is gone for good."""
    try:
        return int(ray.get(ref))
    except RayError as exc:
        sink.emit("ray.actor_error", index=index, error=str(exc).splitlines()[0][:300])
        return EXIT_ERROR


def _check_resources(spec: RayWorkersSpec, sink: Sink) -> None:
    """Warn when the cluster cannot place every actor now (an autoscaler may add nodes)."""
    total: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    want_gpus = spec.workers * spec.num_gpus_per_worker
    want_cpus = spec.workers * spec.num_cpus_per_worker
    if want_gpus > total.get("GPU", 0.0) or want_cpus > total.get("CPU", 0.0):
        sink.emit(
            "ray.warn",
            error=f"{spec.workers} actors need {want_gpus:g} GPUs and {want_cpus:g} CPUs; "
            f"the cluster has {total.get('GPU', 0.0):g} and {total.get('CPU', 0.0):g}: "
            "the rest wait until Ray can place them",
        )


def run_ray_workers(spec: RayWorkersSpec) -> int:
    """Start the actors, wait for their loops, stop them on a signal; return an exit code.

    Returns:
        0 when every loop returned 0 (the study's budget is spent, or a signal stopped
        them cleanly); otherwise the largest code a loop returned (2 for a bad
        configuration, 1 for errors or an actor Ray could not keep alive); 130 when an
        actor did not stop in time or a second signal cut the shutdown short.
    """
    sink = make_sink(spec.progress, spec.verbose)
    ray.init(address=spec.address, log_to_driver=True)
    signals = _Signals()
    try:
        with _handling(signals):
            return _drive(spec, sink, signals)
    finally:
        ray.shutdown()


def _drive(spec: RayWorkersSpec, sink: Sink, signals: _Signals) -> int:
    _check_resources(spec, sink)
    # Ray's stubs type a remote class as the class itself; its handles are dynamic.
    actor_class: Any = ray.remote(WorkerActor)
    actors = [
        actor_class.options(
            num_gpus=spec.num_gpus_per_worker,
            num_cpus=spec.num_cpus_per_worker,
            max_restarts=spec.max_restarts,
            # A restarted actor runs its loop again: same worker id, its trials back.
            max_task_retries=-1 if spec.max_restarts else 0,
            max_concurrency=2,
        ).remote(spec, i)
        for i in range(spec.workers)
    ]
    index: dict[Any, int] = {actor.run.remote(): i for i, actor in enumerate(actors)}
    sink.emit("ray.start", address=spec.address, actors=spec.workers, study=spec.config.study_id)
    codes: dict[int, int] = {}
    pending = list(index)
    while pending and not signals.count:
        done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
        for ref in done:
            codes[index[ref]] = _outcome(ref, index[ref], sink)
            sink.emit("ray.actor_exit", index=index[ref], code=codes[index[ref]])
    if pending:
        sink.emit("ray.shutdown", reason=signals.name, running=len(pending))
        for actor in actors:
            actor.shutdown.remote()
        pending = _join(pending, index, codes, sink, signals, spec)
        for ref in pending:
            codes[index[ref]] = EXIT_INTERRUPTED
        for actor in actors:
            ray.kill(actor, no_restart=True)
    code = max(codes.values(), default=EXIT_OK)
    sink.emit("ray.exit", code=code)
    return code


def _join(
    pending: list[Any],
    index: dict[Any, int],
    codes: dict[int, int],
    sink: Sink,
    signals: _Signals,
    spec: RayWorkersSpec,
) -> list[Any]:
    """Wait for stopping loops until they return, the grace ends or a second signal."""
    first = signals.count
    deadline = time.monotonic() + spec.config.kill_grace + spec.shutdown_grace
    while pending and time.monotonic() < deadline and signals.count == first:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        for ref in done:
            codes[index[ref]] = _outcome(ref, index[ref], sink)
    if pending:
        sink.emit("ray.warn", error=f"{len(pending)} actor(s) did not stop in time; killing them")
    return pending
