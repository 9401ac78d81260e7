"""``hpo worker``: its flags and its signal handling.

``add_worker_parser(subparsers)`` registers the subcommand on the ``hpo`` parser; this
module also runs alone (``python -m hpo_service.cli.worker worker ...``) so the
worker can be used without the server's dependencies being importable. How progress is
shown lives in ``worker/progress.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from hpo_service.worker.config import WorkerConfig
from hpo_service.worker.devices import DeviceSpecError, detect_gpus, plan_slots
from hpo_service.worker.loop import Worker, default_worker_id
from hpo_service.worker.progress import RichSink, make_sink

__all__ = ["add_trial_arguments", "add_worker_parser", "cmd_worker", "main"]


def add_worker_parser(subparsers: Any) -> None:
    """Register ``hpo worker`` on the ``hpo`` parser's subparsers.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="lease trials of a study and run them (a command, or a built-in proxy)",
        description="Run trials: `hpo worker --server URL --key K --study ID -- CMD ...` "
        "substitutes {param} placeholders in CMD, or `--proxy NAME` trains a built-in proxy.",
    )
    p.add_argument(
        "--server",
        default=os.environ.get("HPO_SERVER", "http://127.0.0.1:8000"),
        help="service base URL (default $HPO_SERVER or http://127.0.0.1:8000)",
    )
    p.add_argument(
        "--key",
        default=os.environ.get("HPO_API_KEY"),
        help="API key, role worker or above (default $HPO_API_KEY)",
    )
    p.add_argument("--study", required=True, help="study id")
    p.add_argument(
        "--worker-id",
        default=None,
        help="lease holder id (default <host>-<pid>); reuse it to get your "
        "trials back after a restart",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="trials run at once, unpinned (default 1, or one per GPU group where GPUs are "
        "detected)",
    )
    p.add_argument(
        "--gpus",
        default=None,
        help="GPUs to run on, e.g. 0,1,2,3 or all: one slot per group of --gpus-per-trial, "
        "each trial sees only its group through CUDA_VISIBLE_DEVICES (default: all detected "
        "GPUs unless --parallel is given)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=int,
        default=None,
        help="GPUs per trial; must divide the number of GPUs (default 1)",
    )
    add_trial_arguments(p, kill_grace=10.0)
    p.add_argument(
        "--retry-deadline",
        type=float,
        default=3600.0,
        help="seconds to keep retrying while the service is unreachable",
    )
    p.add_argument(
        "--finish-on-signal",
        action="store_true",
        help="first SIGTERM/SIGINT lets running trials finish; a second releases",
    )
    p.add_argument(
        "--progress",
        choices=["auto", "rich", "log", "json"],
        default="auto",
        help="live table (rich), key=value lines (log) or JSON lines; auto: rich on a terminal",
    )
    p.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- CMD ARGS... (placeholders like {lr.hidden})"
    )
    p.set_defaults(func=cmd_worker)


def add_trial_arguments(p: argparse.ArgumentParser, *, kill_grace: float) -> None:
    """The flags of how a worker runs its trials, shared by ``hpo worker`` and ``ray-workers``.

    Args:
        p: the subcommand's parser.
        kill_grace: default seconds between SIGTERM and SIGKILL when stopping a command
            (shorter where a shutdown must hand trials back within seconds).
    """
    p.add_argument("--proxy", default=None, help="run built-in proxy NAME instead of a command")
    p.add_argument("--proxy-max-steps", type=int, default=None, help="cap on proxy steps")
    p.add_argument("--timeout", type=float, default=None, help="seconds per trial")
    p.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=30.0,
        help="longest heartbeat interval; shortened to a third of the granted lease (default 30)",
    )
    p.add_argument("--poll-min-seconds", type=float, default=0.5)
    p.add_argument(
        "--poll-max-seconds",
        type=float,
        default=15.0,
        help="longest sleep between polls when there is no work (default 15)",
    )
    p.add_argument(
        "--kill-grace",
        type=float,
        default=kill_grace,
        help="seconds between SIGTERM and SIGKILL when stopping a command "
        f"(default {kill_grace:g})",
    )
    p.add_argument(
        "--no-retry-failures",
        dest="retry_failures",
        action="store_false",
        help="a failed run fails the trial instead of requeueing it",
    )
    p.add_argument("--echo", action="store_true", help="show the command's output")
    p.add_argument("--verbose", action="store_true", help="also log idle polls")


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """Build the worker's configuration from parsed flags.

    Raises:
        DeviceSpecError: the GPU flags cannot be satisfied (see ``worker/devices.py``).
    """
    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    if not args.key:
        raise SystemExit("hpo worker: --key (or $HPO_API_KEY) is required")
    plan = plan_slots(
        args.gpus, args.gpus_per_trial, args.parallel, lambda: detect_gpus(os.environ)
    )
    return WorkerConfig(
        server=args.server,
        key=args.key,
        study_id=args.study,
        worker_id=args.worker_id or default_worker_id(),
        command=tuple(command),
        proxy=args.proxy,
        parallel=plan.parallel,
        devices=plan.devices,
        heartbeat_seconds=args.heartbeat_seconds,
        timeout=args.timeout,
        kill_grace=args.kill_grace,
        poll_min=args.poll_min_seconds,
        poll_max=args.poll_max_seconds,
        retry_deadline=args.retry_deadline,
        retry_failures=args.retry_failures,
        finish_on_signal=args.finish_on_signal,
        proxy_max_steps=args.proxy_max_steps,
        echo=args.echo,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the worker until the study has no more work or a signal says stop.

    Returns:
        0 when the work ran out, 1 when a trial could not be reported, 2 for a bad
        configuration (GPU flags, study, command placeholders).
    """
    try:
        config = config_from_args(args)
    except DeviceSpecError as exc:
        sys.stderr.write(f"hpo worker: error: {exc}\n")
        return 2
    # httpx logs every request at INFO; a worker polling for hours must not.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sink = make_sink(args.progress, config.parallel, args.verbose)
    worker = Worker(config, sink)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        worker.request_shutdown(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if isinstance(sink, RichSink):
            sink.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m hpo_service.cli.worker worker ...``."""
    parser = argparse.ArgumentParser(prog="hpo")
    sub = parser.add_subparsers(dest="command_name", required=True)
    add_worker_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
