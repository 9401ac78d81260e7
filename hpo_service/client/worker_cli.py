"""``hpo worker``: its flags, its progress display, and its signal handling.

``add_worker_parser(subparsers)`` registers the subcommand on the ``hpo`` parser; this
module also runs alone (``python -m hpo_service.client.worker_cli worker ...``) so the
worker can be used without the server's dependencies being importable.

Progress goes to stdout: a live table (one row per slot: trial, step, metric, ETA) when
stdout is a terminal, otherwise one structured line per event (``key=value`` or JSON), which
is what log collectors and tests want.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TextIO

from hpo_service.client.worker import Sink, Worker, default_worker_id
from hpo_service.client.worker_config import WorkerConfig

__all__ = ["JsonSink", "KeyValueSink", "RichSink", "add_worker_parser", "cmd_worker", "main"]

_QUIET_EVENTS = frozenset({"slot.idle"})


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class KeyValueSink:
    """One ``ts=... event=... key=value`` line per event; values with spaces are quoted."""

    def __init__(self, out: TextIO | None = None, *, verbose: bool = False) -> None:
        self.out = out or sys.stdout
        self.verbose = verbose
        self._lock = threading.RLock()  # re-entrant: signal handlers emit too

    def emit(self, event: str, slot: int | None = None, **fields: Any) -> None:
        """Write one line."""
        if event in _QUIET_EVENTS and not self.verbose:
            return
        parts = [f"ts={_stamp()}", f"event={event}"]
        if slot is not None:
            parts.append(f"slot={slot}")
        for key, value in _clean(fields).items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if isinstance(value, float):
                text = f"{value:.6g}"
            if not text or any(c.isspace() or c in '"=' for c in text):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        with self._lock:
            self.out.write(" ".join(parts) + "\n")
            self.out.flush()


class JsonSink:
    """One JSON object per event."""

    def __init__(self, out: TextIO | None = None, *, verbose: bool = False) -> None:
        self.out = out or sys.stdout
        self.verbose = verbose
        self._lock = threading.RLock()

    def emit(self, event: str, slot: int | None = None, **fields: Any) -> None:
        """Write one JSON line."""
        if event in _QUIET_EVENTS and not self.verbose:
            return
        record = {"ts": _stamp(), "event": event, "slot": slot, **_clean(fields)}
        with self._lock:
            self.out.write(json.dumps(_clean(record), default=str) + "\n")
            self.out.flush()


class RichSink:
    """A live table, one row per slot, with notable events printed above it."""

    _NOTABLE = frozenset(
        {
            "worker.start",
            "worker.shutdown",
            "worker.error",
            "worker.exit",
            "trial.done",
            "trial.lost",
            "trial.undelivered",
            "trial.rejected",
            "trial.lease_lost",
            "retry",
            "warn",
            "slot.error",
            "child.stdout",
            "child.stderr",
        }
    )

    def __init__(self, parallel: int) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self._rows: dict[int, dict[str, Any]] = {i: {"state": "starting"} for i in range(parallel)}
        self._lock = threading.RLock()
        self._live = Live(
            console=self.console,
            get_renderable=self._table,
            refresh_per_second=4,
            transient=False,
        )
        self._live.start()

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(expand=False, box=None, pad_edge=False)
        for column in ("slot", "state", "trial", "step", "metric", "elapsed", "ETA"):
            table.add_column(column)
        now = time.monotonic()
        with self._lock:
            for slot, row in sorted(self._rows.items()):
                started = row.get("started")
                eta = row.get("eta")
                table.add_row(
                    str(slot),
                    str(row.get("state", "")),
                    str(row.get("trial", "")),
                    str(row.get("step", "")),
                    str(row.get("metric") or ""),
                    f"{now - started:.0f}s" if started else "",
                    f"{eta:.0f}s" if isinstance(eta, int | float) else "",
                )
        return table

    def emit(self, event: str, slot: int | None = None, **fields: Any) -> None:
        """Update the slot's row; print notable events."""
        with self._lock:
            row = self._rows.setdefault(slot, {}) if slot is not None else None
            if row is not None:
                if event == "trial.start":
                    row.clear()
                    row.update(
                        state="running", trial=f"#{fields.get('number')}", started=time.monotonic()
                    )
                elif event == "trial.step":
                    row.update(
                        step=fields.get("step"), metric=fields.get("metric"), eta=fields.get("eta")
                    )
                    if fields.get("total"):
                        row["step"] = f"{fields['step']}/{fields['total']}"
                elif event == "trial.done":
                    row.update(
                        state=f"{fields.get('state') or fields.get('action')}",
                        started=None,
                        eta=None,
                    )
                elif event == "slot.idle":
                    row.update(state="waiting for work", trial="", step="", started=None)
                elif event == "slot.done":
                    row.update(state="done", started=None, eta=None)
                elif event == "retry":
                    row["state"] = f"retrying {fields.get('op')} ({fields.get('attempt')})"
        if event in self._NOTABLE:
            detail = " ".join(f"{k}={v}" for k, v in _clean(fields).items())
            where = f"[slot {slot}] " if slot is not None else ""
            self.console.print(f"{where}{event} {detail}", markup=False, highlight=False)
        if event == "worker.exit":
            self.close()

    def close(self) -> None:
        """Stop the live display (idempotent)."""
        self._live.stop()


def _sink(kind: str, parallel: int, verbose: bool) -> Sink:
    if kind == "auto":
        kind = "rich" if sys.stdout.isatty() else "log"
    if kind == "rich":
        return RichSink(parallel)
    if kind == "json":
        return JsonSink(verbose=verbose)
    return KeyValueSink(verbose=verbose)


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
    p.add_argument("--parallel", type=int, default=1, help="trials run at once (default 1)")
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
        "--retry-deadline",
        type=float,
        default=3600.0,
        help="seconds to keep retrying while the service is unreachable",
    )
    p.add_argument(
        "--kill-grace",
        type=float,
        default=10.0,
        help="seconds between SIGTERM and SIGKILL when stopping a command",
    )
    p.add_argument(
        "--no-retry-failures",
        dest="retry_failures",
        action="store_false",
        help="a failed run fails the trial instead of requeueing it",
    )
    p.add_argument(
        "--finish-on-signal",
        action="store_true",
        help="first SIGTERM/SIGINT lets running trials finish; a second releases",
    )
    p.add_argument("--echo", action="store_true", help="show the command's output")
    p.add_argument(
        "--progress",
        choices=["auto", "rich", "log", "json"],
        default="auto",
        help="live table (rich), key=value lines (log) or JSON lines; auto: rich on a terminal",
    )
    p.add_argument("--verbose", action="store_true", help="also log idle polls")
    p.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- CMD ARGS... (placeholders like {lr.hidden})"
    )
    p.set_defaults(func=cmd_worker)


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """Build the worker's configuration from parsed flags."""
    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    if not args.key:
        raise SystemExit("hpo worker: --key (or $HPO_API_KEY) is required")
    return WorkerConfig(
        server=args.server,
        key=args.key,
        study_id=args.study,
        worker_id=args.worker_id or default_worker_id(),
        command=tuple(command),
        proxy=args.proxy,
        parallel=args.parallel,
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
    """Run the worker until the study has no more work or a signal says stop."""
    config = config_from_args(args)
    # httpx logs every request at INFO; a worker polling for hours must not.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sink = _sink(args.progress, config.parallel, args.verbose)
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
    """Stand-alone entry point: ``python -m hpo_service.client.worker_cli worker ...``."""
    parser = argparse.ArgumentParser(prog="hpo")
    sub = parser.add_subparsers(dest="command_name", required=True)
    add_worker_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
