"""How a worker shows its progress: a live table on a terminal, structured lines otherwise.

A live table (one row per slot: trial, step, metric, ETA) when stdout is a terminal,
otherwise one structured line per event (``key=value`` or JSON), which is what log
collectors and tests want. Every sink satisfies ``ports.Sink``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from hpo_service.worker.ports import Sink

__all__ = ["JsonSink", "KeyValueSink", "RichSink", "make_sink"]

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


def make_sink(kind: str, parallel: int, verbose: bool) -> Sink:
    """The sink ``--progress`` asks for; ``auto`` is the live table on a terminal only."""
    if kind == "auto":
        kind = "rich" if sys.stdout.isatty() else "log"
    if kind == "rich":
        return RichSink(parallel)
    if kind == "json":
        return JsonSink(verbose=verbose)
    return KeyValueSink(verbose=verbose)
