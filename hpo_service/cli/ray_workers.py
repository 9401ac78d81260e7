"""``hpo ray-workers``: the worker loop on N actors of an existing Ray cluster.

Ray is an optional extra (``hpo_service[ray]``): this module only parses flags and
imports ``hpo_service.integrations.ray_workers`` (and with it Ray) when the command
runs, so ``hpo`` starts, and every other subcommand works, without Ray installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from hpo_service.cli.worker import add_trial_arguments
from hpo_service.worker.config import WorkerConfig

__all__ = ["add_ray_workers_parser", "cmd_ray_workers", "main"]

EXIT_CONFIG = 2


def add_ray_workers_parser(subparsers: Any) -> None:
    """Register ``hpo ray-workers`` on the ``hpo`` parser's subparsers.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ray-workers",
        help="run the worker loop on N actors of an existing Ray cluster (needs hpo_service[ray])",
        description="Start N Ray actors, each holding --num-gpus-per-worker GPUs and running "
        "the worker loop of `hpo worker` on them, until the study's budget is spent. "
        "SIGTERM/Ctrl-C hands every running trial back to the service.",
    )
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster address: host:port, auto or ray://host:port (default $RAY_ADDRESS)",
    )
    p.add_argument(
        "--server",
        default=os.environ.get("HPO_SERVER", "http://127.0.0.1:8000"),
        help="service base URL as the cluster's nodes reach it (default $HPO_SERVER)",
    )
    p.add_argument(
        "--key",
        default=os.environ.get("HPO_API_KEY"),
        help="API key, role worker or above (default $HPO_API_KEY)",
    )
    p.add_argument("--study", required=True, help="study id")
    p.add_argument("--workers", type=int, default=1, help="number of actors (default 1)")
    p.add_argument(
        "--num-gpus-per-worker",
        type=float,
        default=1.0,
        help="GPUs each actor holds; its trials see only them (default 1; 0 for CPU-only)",
    )
    p.add_argument(
        "--num-cpus-per-worker", type=float, default=1.0, help="CPUs each actor holds (default 1)"
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=3,
        help="times Ray restarts a dead actor, which gets its trials back (default 3)",
    )
    p.add_argument(
        "--worker-prefix",
        default="ray",
        help="first part of each actor's worker id <prefix>-<node-ip>-gpu<ids> (default ray)",
    )
    add_trial_arguments(p, kill_grace=5.0)
    p.add_argument(
        "--progress",
        choices=["log", "json"],
        default="log",
        help="key=value lines (log) or JSON lines, forwarded from the actors by Ray",
    )
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="-- CMD ARGS... (placeholders like {lr.hidden}; use paths every node has)",
    )
    p.set_defaults(func=cmd_ray_workers)


def _problem(args: argparse.Namespace, command: list[str]) -> str | None:
    """What makes the flags unusable, checked before connecting to any cluster."""
    if not args.address:
        return "--address (or $RAY_ADDRESS) is required: the Ray cluster to run on"
    if not args.key:
        return "--key (or $HPO_API_KEY) is required"
    if bool(command) == bool(args.proxy):
        return "give either a command (after --) or --proxy NAME, not both"
    if args.workers < 1:
        return "--workers must be at least 1"
    if args.num_gpus_per_worker < 0 or args.num_cpus_per_worker < 0:
        return "--num-gpus-per-worker and --num-cpus-per-worker cannot be negative"
    if args.num_gpus_per_worker > 1 and not float(args.num_gpus_per_worker).is_integer():
        return "--num-gpus-per-worker above 1 must be a whole number"
    return None


def worker_config(args: argparse.Namespace, command: list[str]) -> WorkerConfig:
    """The loop's settings; each actor replaces ``worker_id`` with its own."""
    return WorkerConfig(
        server=args.server,
        key=args.key,
        study_id=args.study,
        worker_id=args.worker_prefix,
        command=tuple(command),
        proxy=args.proxy,
        heartbeat_seconds=args.heartbeat_seconds,
        timeout=args.timeout,
        kill_grace=args.kill_grace,
        poll_min=args.poll_min_seconds,
        poll_max=args.poll_max_seconds,
        retry_failures=args.retry_failures,
        proxy_max_steps=args.proxy_max_steps,
        echo=args.echo,
    )


def cmd_ray_workers(args: argparse.Namespace) -> int:
    """Run the actors until the study has no more work or a signal says stop."""
    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    problem = _problem(args, command)
    if problem is not None:
        print(f"hpo ray-workers: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        from hpo_service.integrations.ray_workers import RayWorkersSpec, run_ray_workers
    except ImportError as exc:
        print(f"hpo ray-workers needs Ray: pip install 'hpo_service[ray]' ({exc})", file=sys.stderr)
        return EXIT_CONFIG
    spec = RayWorkersSpec(
        address=args.address,
        config=worker_config(args, command),
        workers=args.workers,
        num_gpus_per_worker=args.num_gpus_per_worker,
        num_cpus_per_worker=args.num_cpus_per_worker,
        max_restarts=args.max_restarts,
        worker_prefix=args.worker_prefix,
        progress=args.progress,
        verbose=args.verbose,
    )
    return run_ray_workers(spec)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m hpo_service.cli.ray_workers ray-workers ...``."""
    parser = argparse.ArgumentParser(prog="hpo")
    sub = parser.add_subparsers(dest="command_name", required=True)
    add_ray_workers_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
