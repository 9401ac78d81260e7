"""The worker loop: lease trials, run them, heartbeat, report, finish; never lose work.

One ``Worker`` runs ``parallel`` slots, each a thread that leases one trial at a time
(``count=1``) under its own worker id (``<id>.<slot>`` when there are several slots:
the service hands a worker its own active trials first, so slots sharing one id would
be handed each other's trials). A pinned slot (``config.devices``) runs every trial in a
child process that sees only its GPUs: a command gets them as ``CUDA_VISIBLE_DEVICES``,
and a built-in proxy, which otherwise trains in the slot's thread, is started as a child
(``proxy_child``) because a thread cannot have devices of its own. A completion records
where the trial ran (``host``, and ``devices`` when pinned) in its cost.

While a trial runs, a heartbeat thread keeps its lease and watches for ``should_stop``;
intermediate measurements go to the service as they arrive. Every call goes through
``retry_call``; the finishing call of a trial carries one Idempotency-Key for all its
attempts, so a completion that reached the service before the connection broke is
answered again, never applied twice.

Shutdown (SIGTERM/SIGINT, via ``request_shutdown``): slots stop leasing and release
their trials (``fail`` with ``retry: true``) after stopping the work, so another worker
picks them up at once; with ``finish_on_signal`` the first signal lets running trials
finish and a second one releases them. A trial whose work already finished when the
signal came is completed, not released.

The worker exits when the study is completed, or when ``max_trials`` is reached and no
trial is left unfinished (checked through the study's ``trial_counts``), or on a signal.
"""

from __future__ import annotations

import inspect
import os
import random
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypeVar

from hpo_service.client.backoff import Backoff, GiveUpError, retry_call
from hpo_service.client.client import HPOClient
from hpo_service.client.errors import ProblemError
from hpo_service.client.models import Study, Trial
from hpo_service.worker.command import (
    CommandOutcome,
    MetricLine,
    PlaceholderError,
    final_result,
    placeholders,
    read_result_file,
    run_command,
    substitute,
    trial_environment,
)
from hpo_service.worker.config import WorkerConfig
from hpo_service.worker.heartbeat import HeartbeatThread
from hpo_service.worker.ports import Sink
from hpo_service.worker.proxy_child import DIVERGED_EXIT, child_argv
from hpo_service.worker.reporter import MeasurementReporter
from hpo_service.worker.trial_run import Outcome, TrialRun, finite_metrics, judge_result

__all__ = ["ConfigError", "Sink", "Worker", "WorkerConfig", "default_worker_id"]

JSON = dict[str, Any]
T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
UNFINISHED_STATES = ("requested", "active", "stopping")


class ConfigError(Exception):
    """The worker cannot start: bad arguments, unknown study, missing proxy module."""


def default_worker_id() -> str:
    """``<host>-<pid>``: unique per process; pass ``--worker-id`` to resume after a restart."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Runs trials of one study until there is no more work or it is told to stop."""

    def __init__(
        self,
        config: WorkerConfig,
        sink: Sink,
        *,
        client_factory: Callable[[], HPOClient] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self._client_factory = client_factory or (
            lambda: HPOClient(config.server, config.key, timeout=config.http_timeout)
        )
        self._stop_leasing = threading.Event()
        self._release = threading.Event()
        self._signals = 0
        self._runs: dict[str, TrialRun] = {}
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self._study: Study | None = None
        self._proxy: Callable[..., Any] | None = None
        self._rng = random.Random()

    # Control ------------------------------------------------------------------------------
    def request_shutdown(self, reason: str = "signal") -> None:
        """Stop leasing; release running trials (or let them finish, on a first signal).

        Safe to call from a signal handler: it only sets events.
        """
        self._signals += 1
        self._stop_leasing.set()
        if self._signals >= 2 or not self.config.finish_on_signal:
            self._release.set()
            with self._lock:
                runs = list(self._runs.values())
            for run in runs:
                run.interrupt("shutdown")
        self.sink.emit("worker.shutdown", reason=reason, release=self._release.is_set())

    @property
    def study(self) -> Study:
        """The study as ``prepare`` read it; every trial is judged against it.

        Raises:
            RuntimeError: ``prepare`` has not run (nothing is leased before it does).
        """
        if self._study is None:
            raise RuntimeError("the worker has not read its study yet (call prepare first)")
        return self._study

    # Setup --------------------------------------------------------------------------------
    def _policy(self, deadline: float | None = None) -> Backoff:
        return Backoff(
            base=0.5, factor=2.0, cap=10.0, deadline=deadline or self.config.retry_deadline
        )

    def call(
        self,
        op: str,
        fn: Callable[[], T],
        *,
        slot: int | None = None,
        policy: Backoff | None = None,
        stop: threading.Event | None = None,
        quiet: bool = False,
    ) -> T:
        """``retry_call`` with this worker's policy, logging each retry unless ``quiet``."""

        def told(attempt: int, exc: BaseException, sleep: float) -> None:
            self.sink.emit(
                "retry", slot, op=op, attempt=attempt, sleep=round(sleep, 2), error=str(exc)[:200]
            )

        return retry_call(
            fn, policy or self._policy(), stop=stop, on_retry=None if quiet else told, rng=self._rng
        )

    def prepare(self) -> None:
        """Read the study and check the command or proxy against it before any lease.

        Raises:
            ConfigError: unknown study, bad key, bad placeholder, proxy unavailable.
        """
        cfg = self.config
        if bool(cfg.command) == bool(cfg.proxy):
            raise ConfigError("give either a command (after --) or --proxy NAME, not both")
        if cfg.parallel < 1:
            raise ConfigError("--parallel must be at least 1")
        if cfg.devices and len(cfg.devices) != cfg.parallel:
            raise ConfigError(
                f"{len(cfg.devices)} GPU groups for {cfg.parallel} slots: give one per slot"
            )
        with self._client_factory() as client:
            try:
                self._study = self.call(
                    "get_study", lambda: client.studies.get(cfg.study_id), stop=self._stop_leasing
                )
            except ProblemError as exc:
                raise ConfigError(f"cannot read study {cfg.study_id!r}: {exc}") from exc
            except GiveUpError as exc:
                raise ConfigError(f"service unreachable at {cfg.server}: {exc.last}") from exc
        if cfg.command:
            names = set(self.study.space.names())
            unknown = placeholders(cfg.command) - names
            if unknown:
                raise ConfigError(
                    f"placeholders {sorted(unknown)} name no parameter of the study "
                    f"(parameters: {sorted(names)})"
                )
        if cfg.proxy:
            self._proxy = _load_proxy(cfg.proxy)

    # Main ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Prepare, run every slot to its end, and return the process exit code."""
        try:
            self.prepare()
        except ConfigError as exc:
            if self._stop_leasing.is_set():  # a signal while still starting: a clean exit
                self.sink.emit("worker.exit", code=EXIT_OK, errors=0)
                return EXIT_OK
            self.sink.emit("worker.error", error=str(exc))
            return EXIT_CONFIG
        cfg = self.config
        self.sink.emit(
            "worker.start",
            study=cfg.study_id,
            worker=cfg.worker_id,
            parallel=cfg.parallel,
            mode="proxy" if cfg.proxy else "command",
            devices=list(cfg.devices) or None,
        )
        threads = [
            threading.Thread(target=self._slot_main, args=(i,), name=f"slot-{i}", daemon=True)
            for i in range(cfg.parallel)
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
        code = EXIT_ERROR if self._errors else EXIT_OK
        self.sink.emit("worker.exit", code=code, errors=len(self._errors))
        return code

    def _slot_id(self, slot: int) -> str:
        wid = self.config.worker_id
        return wid if self.config.parallel == 1 else f"{wid}.{slot}"

    def _slot_devices(self, slot: int) -> str | None:
        """The slot's ``CUDA_VISIBLE_DEVICES``, or None when slots are not pinned."""
        return self.config.devices[slot] if self.config.devices else None

    def _placement(self, slot: int) -> JSON:
        """Where a trial ran, recorded in its cost: which host, which GPUs if pinned."""
        where: JSON = {"host": socket.gethostname()}
        devices = self._slot_devices(slot)
        if devices is not None:
            where["devices"] = devices
        return where

    def _slot_main(self, slot: int) -> None:
        try:
            with self._client_factory() as client:
                self._slot_loop(client, slot)
        except Exception as exc:  # a slot must report, not vanish
            self._errors.append(f"slot {slot}: {exc}")
            self.sink.emit("slot.error", slot, error=str(exc), tb=traceback.format_exc()[-2000:])

    def _slot_loop(self, client: HPOClient, slot: int) -> None:
        worker_id = self._slot_id(slot)
        idle = 0
        while not self._stop_leasing.is_set():
            try:
                leased = self.call(
                    "suggest",
                    lambda: client.trials.suggest(self.config.study_id, worker_id, 1),
                    slot=slot,
                    stop=self._stop_leasing,
                )
            except GiveUpError as exc:
                if self._stop_leasing.is_set():
                    break
                raise RuntimeError(f"service unreachable: {exc.last}") from exc
            trials = leased.trials
            if trials:
                idle = 0
                for trial in trials:
                    if self._stop_leasing.is_set():
                        self._finish(
                            client, TrialRun(trial, slot, worker_id), self._release_outcome()
                        )
                    else:
                        self._run_trial(client, slot, worker_id, trial)
                continue
            if self._no_more_work(client, slot):
                self.sink.emit("slot.done", slot)
                return
            ceiling = min(self.config.poll_max, self.config.poll_min * 1.5**idle)
            idle += 1
            self.sink.emit("slot.idle", slot, sleep=round(ceiling, 2))
            self._stop_leasing.wait(ceiling * self._rng.uniform(0.5, 1.0))

    def _no_more_work(self, client: HPOClient, slot: int) -> bool:
        """The exit rule of API.md: study completed, or max_trials reached and all finished."""
        try:
            study = self.call(
                "get_study",
                lambda: client.studies.get(self.config.study_id),
                slot=slot,
                stop=self._stop_leasing,
            )
        except GiveUpError:
            return self._stop_leasing.is_set()
        if study.state == "completed":
            return True
        if study.state != "active" or study.max_trials is None:
            return False  # paused, or unlimited: more work may come
        unfinished = sum(study.trial_counts.get(s, 0) for s in UNFINISHED_STATES)
        return unfinished == 0

    # One trial ----------------------------------------------------------------------------
    def _heartbeat_interval(self, trial: Trial) -> float:
        """A third of the lease the service granted, capped by ``heartbeat_seconds``."""
        interval = self.config.heartbeat_seconds
        expires = trial.lease_expires_at
        if expires is not None:
            if expires.tzinfo is None:  # API.md times are UTC, with or without an offset
                expires = expires.replace(tzinfo=UTC)
            left = (expires - datetime.now(UTC)).total_seconds()
            interval = min(interval, left / 3)
        return max(0.25, interval)

    def _run_trial(self, client: HPOClient, slot: int, worker_id: str, trial: Trial) -> None:
        run = TrialRun(trial, slot, worker_id)
        with self._lock:
            self._runs[run.id] = run
        if self._release.is_set():
            run.interrupt("shutdown")
        self.sink.emit(
            "trial.start",
            slot,
            trial=run.id,
            number=trial.number,
            attempt=trial.attempt,
            params=trial.params,
        )
        beat = HeartbeatThread(self, client, run, self._heartbeat_interval(trial))
        beat.start()
        run.reporter = MeasurementReporter(self, client, run)
        run.reporter.start()
        try:
            if not self.config.proxy:
                outcome = self._run_command(client, run)
            elif self._slot_devices(slot) is not None:
                outcome = self._run_proxy_child(client, run)
            else:
                outcome = self._run_proxy(client, run)
        except Exception as exc:
            outcome = Outcome(
                "fail",
                reason=f"worker error: {exc}\n{traceback.format_exc()[-2000:]}",
                retry=self.config.retry_failures,
            )
        finally:
            with self._lock:
                self._runs.pop(run.id, None)
        # Measurements must land before the finishing call (after it the lease is gone);
        # the heartbeat keeps the lease alive meanwhile.
        run.reporter.close(timeout=5.0 if self._release.is_set() else 15.0)
        beat.done.set()
        beat.join(timeout=5.0)
        self._finish(client, run, outcome)

    def _release_outcome(self) -> Outcome:
        return Outcome(
            "release",
            reason=f"worker {self.config.worker_id} shut down; trial released",
            retry=True,
        )

    def _decide(
        self,
        run: TrialRun,
        done: bool,
        metrics: dict[str, float],
        cost: dict[str, Any],
        failure: str,
    ) -> Outcome:
        """Map how the work ended (and why it was interrupted) to what to report."""
        if run.why == "lease_lost":
            return Outcome("none", reason="lease lost; the service requeued the trial")
        if done:
            return judge_result(self.study.objective_names(), metrics, cost, partial=False)
        if run.why == "shutdown":
            return self._release_outcome()
        if run.why == "should_stop":
            return judge_result(self.study.objective_names(), metrics, cost, partial=True)
        return Outcome("fail", reason=failure, retry=self.config.retry_failures)

    def _measure(
        self, run: TrialRun, step: int, metrics: dict[str, float], elapsed: float | None
    ) -> None:
        """Show a measurement now and queue it for the service (never blocks training)."""
        run.step = step
        clean = finite_metrics(metrics)
        self.sink.emit(
            "trial.step",
            run.slot,
            trial=run.id,
            number=run.trial.number,
            step=step,
            total=run.total_steps,
            metric=self._study_metric(clean),
            eta=run.eta(),
        )
        if clean and run.reporter is not None:
            run.reporter.put((step, clean, elapsed))

    def send_measurement(
        self,
        client: HPOClient,
        run: TrialRun,
        step: int,
        clean: dict[str, float],
        elapsed: float | None,
        stop: threading.Event,
        *,
        offline: bool,
    ) -> bool:
        """Post one measurement; relay ``should_stop``; return whether it got through.

        ``offline`` (the previous one could not be delivered) allows one attempt only,
        so a backlog built up during an outage drains in seconds, not minutes.
        """
        if run.why == "lease_lost":
            return True
        policy = Backoff(max_attempts=1) if offline else Backoff(base=0.2, cap=2.0, deadline=15.0)
        try:
            reply = self.call(
                "report",
                lambda: client.trials.report(run.id, run.worker_id, step, clean, elapsed),
                slot=run.slot,
                policy=policy,
                stop=stop,
                quiet=True,
            )
        except GiveUpError as exc:
            # A lost measurement is only a lost point on a curve.
            self.sink.emit(
                "warn",
                run.slot,
                trial=run.id,
                step=step,
                error=f"measurement dropped: {exc.last}"[:200],
            )
            return False
        except ProblemError as exc:
            if exc.status in (404, 409):
                run.interrupt("lease_lost")
            else:
                self.sink.emit("warn", run.slot, trial=run.id, error=f"report rejected: {exc}")
            return True
        if reply.should_stop:
            self.sink.emit("trial.should_stop", run.slot, trial=run.id, step=step)
            run.interrupt("should_stop")
        return True

    def _study_metric(self, metrics: dict[str, float]) -> str | None:
        name = self.study.objective.metric
        if name in metrics:
            return f"{name}={metrics[name]:.6g}"
        if metrics:
            k, v = next(iter(metrics.items()))
            return f"{k}={v:.6g}"
        return None

    def _run_command(self, client: HPOClient, run: TrialRun) -> Outcome:
        names = frozenset(self.study.space.names())
        try:
            argv = substitute(self.config.command, run.trial.params, inactive=names)
        except PlaceholderError as exc:
            return Outcome("fail", reason=str(exc))
        outcome, metrics, cost = self._run_child(run, argv)
        if outcome.succeeded and outcome.parse_errors and not metrics:
            return Outcome("fail", reason=outcome.failure_reason())
        return self._decide(run, outcome.succeeded, metrics, cost, outcome.failure_reason())

    def _run_child(
        self, run: TrialRun, argv: list[str]
    ) -> tuple[CommandOutcome, dict[str, float], dict[str, Any]]:
        """Run one child process for the trial; return how it ended and its result."""
        with TemporaryDirectory(prefix=f"hpo-{run.id}-") as tmp:
            result_file = Path(tmp) / "result.json"
            env = trial_environment(
                run.trial,
                run.worker_id,
                result_file,
                os.environ,
                devices=self._slot_devices(run.slot),
            )

            def on_line(line: MetricLine) -> None:
                if line.total_steps is not None:
                    run.total_steps = line.total_steps
                if line.step is not None:
                    self._measure(run, line.step, line.metrics, line.elapsed_s)

            echo = None
            if self.config.echo:

                def echo(stream: str, text: str) -> None:
                    self.sink.emit("child." + stream, run.slot, trial=run.id, line=text)

            outcome = run_command(
                argv,
                env,
                on_line=on_line,
                stop=run.stop,
                timeout=self.config.timeout,
                kill_grace=self.config.kill_grace,
                echo=echo,
            )
            if outcome.timed_out:
                run.interrupt("timeout")
            try:
                from_file = read_result_file(result_file)
            except ValueError as exc:
                from_file = None
                outcome.parse_errors.append(str(exc))
        metrics, cost = final_result(outcome.lines, from_file)
        return outcome, metrics, {"wall_seconds": round(outcome.elapsed_s, 3), **cost}

    def _proxy_seeds(self, run: TrialRun) -> tuple[int, int]:
        """(init seed, data seed): per trial, and one data order for the whole study."""
        base = int(self.study.seed) if self.study.seed is not None else 0
        return base * 1_000_003 + run.trial.number, base

    def _run_proxy_child(self, client: HPOClient, run: TrialRun) -> Outcome:
        """Train the proxy in a child that sees only the slot's GPUs (see ``proxy_child``)."""
        assert self.config.proxy is not None
        seed, data_seed = self._proxy_seeds(run)
        argv = child_argv(
            self.config.proxy,
            self.study.scale,
            seed=seed,
            data_seed=data_seed,
            max_steps=self.config.proxy_max_steps,
        )
        outcome, metrics, cost = self._run_child(run, argv)
        if outcome.returncode == DIVERGED_EXIT and run.why != "shutdown":
            return Outcome("infeasible", reason=f"training diverged; metrics {metrics}")
        return self._decide(run, outcome.succeeded, metrics, cost, outcome.failure_reason())

    def _run_proxy(self, client: HPOClient, run: TrialRun) -> Outcome:
        assert self._proxy is not None
        assert self.config.proxy is not None
        seed, data_seed = self._proxy_seeds(run)
        start = time.monotonic()

        def on_measurement(step: int, metrics: dict[str, float]) -> bool:
            self._measure(run, step, metrics, time.monotonic() - start)
            timeout = self.config.timeout
            if timeout is not None and time.monotonic() - start > timeout:
                run.interrupt("timeout")
            return run.stop.is_set()

        kwargs: JSON = {"seed": seed, "on_measurement": on_measurement}
        if self.config.proxy_max_steps is not None:
            kwargs["max_steps"] = self.config.proxy_max_steps
        if "data_seed" in inspect.signature(self._proxy).parameters:
            # Every trial sees the same batches, so differences come from the parameters.
            kwargs["data_seed"] = data_seed
        result = self._proxy(self.config.proxy, run.trial.params, self.study.scale, **kwargs)
        metrics = {k: float(v) for k, v in dict(result.metrics).items()}
        cost = dict(result.cost)
        if getattr(result, "diverged", False) and run.why != "shutdown":
            return Outcome("infeasible", reason=f"training diverged; metrics {metrics}")
        if run.why == "timeout":
            return Outcome(
                "fail",
                reason=f"timed out after {self.config.timeout}s",
                retry=self.config.retry_failures,
            )
        done = run.why is None
        return self._decide(run, done, metrics, cost, "proxy stopped")

    # Finishing ----------------------------------------------------------------------------
    def _finish(self, client: HPOClient, run: TrialRun, outcome: Outcome) -> None:
        """Tell the service how the trial ended, retrying until it lands (or cannot)."""
        slot, tid, wid = run.slot, run.id, run.worker_id
        if outcome.action == "none":
            self.sink.emit("trial.lost", slot, trial=tid, reason=outcome.reason)
            return
        # One key per finishing request, reused by every retry of it.
        key = f"{outcome.action}-{tid}-{run.trial.attempt}-{uuid.uuid4().hex}"
        reason = outcome.reason[:4000]
        fn: Callable[[], Trial]
        if outcome.action == "complete":
            cost = {**outcome.cost, **self._placement(slot)}

            def fn() -> Trial:
                return client.trials.complete(tid, wid, outcome.metrics, cost, idempotency_key=key)
        elif outcome.action == "infeasible":

            def fn() -> Trial:
                return client.trials.infeasible(tid, wid, reason, idempotency_key=key)
        else:

            def fn() -> Trial:
                return client.trials.fail(
                    tid, wid, reason, retry=outcome.retry, idempotency_key=key
                )

        try:
            answer = self.call(outcome.action, fn, slot=slot)
        except GiveUpError as exc:
            self._errors.append(f"trial {tid}: {outcome.action} never reached the service")
            self.sink.emit(
                "trial.undelivered",
                slot,
                trial=tid,
                action=outcome.action,
                error=str(exc.last)[:300],
            )
            return
        except ProblemError as exc:
            if exc.status == 422 and outcome.action == "complete":
                self._finish(client, run, Outcome("fail", reason=f"result rejected: {exc.detail}"))
                return
            self.sink.emit(
                "trial.rejected",
                slot,
                trial=tid,
                action=outcome.action,
                status=exc.status,
                slug=exc.slug,
                error=exc.detail[:300],
            )
            return
        self.sink.emit(
            "trial.done",
            slot,
            trial=tid,
            number=run.trial.number,
            action=outcome.action,
            state=answer.state,
            metric=self._study_metric(outcome.metrics),
            reason=outcome.reason.splitlines()[0][:200] if outcome.reason else None,
            seconds=round(time.monotonic() - run.started, 2),
        )


def _load_proxy(name: str) -> Callable[..., Any]:
    """Import the built-in proxies only when asked: they pull in torch.

    Raises:
        ConfigError: the training package is missing, or the name is unknown.
    """
    try:
        from hpo_service.proxies import runner
    except ImportError as exc:
        raise ConfigError(
            f"--proxy needs hpo_service.proxies (and torch), which failed to import: {exc}"
        ) from exc
    known = getattr(runner, "PROXIES", None)
    if known is not None and name not in known:
        raise ConfigError(f"unknown proxy {name!r}; built in: {', '.join(sorted(known))}")
    fn: Callable[..., Any] = runner.run_proxy
    return fn
