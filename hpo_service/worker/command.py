"""Command mode: run the user's training command once per trial and read its metrics.

The contract with the command is deliberately small so any language can meet it:

* ``{name}`` in an argument is replaced by the trial's value of parameter ``name``
  (``{{``/``}}`` are literal braces); every value is also in ``HPO_PARAMS`` (JSON), and
  ``HPO_TRIAL_ID``, ``HPO_TRIAL_NUMBER``, ``HPO_ATTEMPT``, ``HPO_STUDY_ID``,
  ``HPO_WORKER_ID`` and ``HPO_RESULT_FILE`` are set.
* A stdout line ``HPO_METRIC {json}`` reports metrics. With a ``"step"`` it is an
  intermediate measurement (``"total_steps"`` lets the worker show an ETA); without, it
  is (part of) the final result. Metrics are the other numeric keys, or a ``"metrics"``
  object; a ``"cost"`` object is added to the trial's cost.
* Alternatively the command writes ``{"metrics": {...}, "cost": {...}}`` (or a flat
  object of metrics) to the file named by ``HPO_RESULT_FILE``; it wins over stdout.
* A non-zero exit code, together with the last lines of stderr, is the failure reason.

The child runs in its own session so the worker (not the terminal) decides when it
stops, and so stopping kills the whole process group, not just the shell in front of it.
Being in its own session, nothing would stop it if the worker were killed outright, so
``child_lifetime`` ties it (and its group) to the worker's life.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo_service.client.models import Trial
from hpo_service.worker.child_lifetime import GroupGuard, die_with_parent

__all__ = [
    "METRIC_PREFIX",
    "CommandOutcome",
    "MetricLine",
    "MetricParseError",
    "PlaceholderError",
    "final_result",
    "format_value",
    "parse_metric_line",
    "placeholders",
    "read_result_file",
    "run_command",
    "substitute",
    "trial_environment",
]

METRIC_PREFIX = "HPO_METRIC"
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z0-9_.\-]{1,128})\}")
_RESERVED = frozenset({"step", "total_steps", "elapsed_s", "cost", "metrics"})
_SECRET_ENV = ("HPO_API_KEY", "HPO_KEY")
STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4000


class PlaceholderError(ValueError):
    """A ``{name}`` in the command names no parameter of the study."""


class MetricParseError(ValueError):
    """A line starts with ``HPO_METRIC`` but does not carry a JSON object of numbers."""


# Placeholders -----------------------------------------------------------------------------
def placeholders(args: Sequence[str]) -> set[str]:
    """Every parameter name the command refers to, so typos fail before any trial runs."""
    return {m.group(1) for arg in args for m in _PLACEHOLDER.finditer(arg) if m.group(1)}


def format_value(value: Any) -> str:
    """Render a parameter value the way a command-line parser expects it.

    Floats use ``repr`` (shortest round-trip form), so no precision is lost between the
    service and the training script; integral ints stay ints.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return ""
    return str(value)


def substitute(
    args: Sequence[str], params: Mapping[str, Any], *, inactive: frozenset[str] = frozenset()
) -> list[str]:
    """Replace ``{name}`` placeholders with the trial's values.

    Args:
        args: the command line as given after ``--``.
        params: the trial's parameters.
        inactive: names of the study's parameters that may be absent from ``params``
            (conditional parameters switched off); they become the empty string.

    Raises:
        PlaceholderError: a placeholder names neither a parameter nor an inactive one.
    """

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]  # "{{" -> "{", "}}" -> "}"
        if name in params:
            return format_value(params[name])
        if name in inactive:
            return ""
        raise PlaceholderError(f"placeholder {{{name}}} names no parameter of the trial")

    return [_PLACEHOLDER.sub(one, arg) for arg in args]


# Metrics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricLine:
    """One ``HPO_METRIC`` line, decoded.

    Attributes:
        step: the training step of an intermediate measurement; None for a final result.
        metrics: the numeric metrics (may include NaN/inf; the worker decides what to do).
        total_steps: the run's planned length, when the command says (for the ETA).
        elapsed_s: seconds since the run started, when the command says.
        cost: cost entries to add to the trial's cost.
    """

    step: int | None
    metrics: dict[str, float]
    total_steps: int | None = None
    elapsed_s: float | None = None
    cost: dict[str, float] = field(default_factory=dict)


def _numbers(raw: Mapping[str, Any]) -> dict[str, float]:
    return {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _int_or_none(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MetricParseError(f"{what} must be a number, got {value!r}")
    return int(value)


def parse_metric_line(line: str) -> MetricLine | None:
    """Decode ``HPO_METRIC {json}``; None for any other line.

    Raises:
        MetricParseError: the line has the prefix but no valid JSON object after it.
    """
    text = line.strip()
    if not text.startswith(METRIC_PREFIX):
        return None
    rest = text[len(METRIC_PREFIX) :]
    if rest and not rest[0].isspace():
        return None  # e.g. HPO_METRICS: not ours
    try:
        raw = json.loads(rest)
    except ValueError as exc:
        raise MetricParseError(f"not JSON after {METRIC_PREFIX}: {rest.strip()[:200]!r}") from exc
    if not isinstance(raw, dict):
        raise MetricParseError(f"{METRIC_PREFIX} needs a JSON object, got {type(raw).__name__}")
    step = _int_or_none(raw.get("step"), "step")
    total = _int_or_none(raw.get("total_steps"), "total_steps")
    elapsed = raw.get("elapsed_s")
    nested = raw.get("metrics")
    if isinstance(nested, dict):
        metrics = _numbers(nested)
    else:
        metrics = _numbers({k: v for k, v in raw.items() if k not in _RESERVED})
    cost = _numbers(raw["cost"]) if isinstance(raw.get("cost"), dict) else {}
    return MetricLine(
        step=step,
        metrics=metrics,
        total_steps=total,
        elapsed_s=float(elapsed) if isinstance(elapsed, int | float) else None,
        cost=cost,
    )


def read_result_file(path: Path) -> tuple[dict[str, float], dict[str, float]] | None:
    """Read ``HPO_RESULT_FILE``: ``{"metrics", "cost"}`` or a flat object of metrics.

    Returns:
        (metrics, cost), or None when the command did not write the file (or left it empty).

    Raises:
        MetricParseError: the file exists but is not a JSON object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    if not text.strip():
        return None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise MetricParseError(f"result file {path} is not JSON: {text[:200]!r}") from exc
    if not isinstance(raw, dict):
        raise MetricParseError(f"result file {path} must hold a JSON object")
    if isinstance(raw.get("metrics"), dict):
        cost = _numbers(raw["cost"]) if isinstance(raw.get("cost"), dict) else {}
        return _numbers(raw["metrics"]), cost
    return _numbers({k: v for k, v in raw.items() if k not in _RESERVED}), {}


def final_result(
    lines: Sequence[MetricLine], from_file: tuple[dict[str, float], dict[str, float]] | None
) -> tuple[dict[str, float], dict[str, float]]:
    """The trial's result: final lines merged, else the last measurement; the file wins.

    Falling back to the last intermediate measurement is what makes a run that was
    stopped early (or killed) still report its partial result.
    """
    metrics: dict[str, float] = {}
    cost: dict[str, float] = {}
    last_step: dict[str, float] = {}
    for line in lines:
        cost.update(line.cost)
        if line.step is None:
            metrics.update(line.metrics)
        else:
            last_step = line.metrics
    if not metrics:
        metrics = dict(last_step)
    if from_file is not None:
        metrics.update(from_file[0])
        cost.update(from_file[1])
    return metrics, cost


# Running ----------------------------------------------------------------------------------
def trial_environment(
    trial: Trial,
    worker_id: str,
    result_file: Path,
    base: Mapping[str, str],
    *,
    devices: str | None = None,
) -> dict[str, str]:
    """The child's environment: the worker's, minus its API key, plus the trial's.

    Args:
        trial: the leased trial.
        worker_id: the slot's lease holder id.
        result_file: where the command may write its result.
        base: the worker's own environment.
        devices: the slot's GPUs; set as ``CUDA_VISIBLE_DEVICES`` so the command sees
            only them (its ``cuda:0`` is the slot's first GPU). ``CUDA_DEVICE_ORDER``
            defaults to ``PCI_BUS_ID`` so the ids mean what ``nvidia-smi`` and Slurm call
            them, not CUDA's fastest-first order; a value the user set is kept.
    """
    env = {k: v for k, v in base.items() if k not in _SECRET_ENV}
    env.setdefault("PYTHONUNBUFFERED", "1")  # metrics should arrive while training runs
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env.update(
        {
            "HPO_PARAMS": json.dumps(trial.params, sort_keys=True),
            "HPO_TRIAL_ID": trial.id,
            "HPO_TRIAL_NUMBER": str(trial.number),
            "HPO_ATTEMPT": str(trial.attempt),
            "HPO_STUDY_ID": trial.study_id,
            "HPO_WORKER_ID": worker_id,
            "HPO_RESULT_FILE": str(result_file),
        }
    )
    return env


@dataclass
class CommandOutcome:
    """How one run of the command ended.

    Attributes:
        returncode: the exit status (negative: killed by that signal); None if it never ran.
        lines: every ``HPO_METRIC`` line, in order.
        stderr_tail: the last lines of stderr.
        elapsed_s: wall time of the run.
        timed_out: the worker killed it after ``timeout`` seconds.
        stopped: the worker stopped it because ``stop`` was set.
        parse_errors: malformed ``HPO_METRIC`` lines (first few).
        start_error: why the command could not be started.
    """

    returncode: int | None
    lines: list[MetricLine]
    stderr_tail: str
    elapsed_s: float
    timed_out: bool = False
    stopped: bool = False
    parse_errors: list[str] = field(default_factory=list)
    start_error: str | None = None

    @property
    def succeeded(self) -> bool:
        """The command ran to the end on its own and exited 0."""
        return self.returncode == 0 and not self.timed_out and not self.stopped

    def failure_reason(self) -> str:
        """A human-readable reason, with the stderr tail, for ``fail``."""
        if self.start_error is not None:
            return self.start_error
        if self.timed_out:
            head = f"timed out after {self.elapsed_s:.0f}s"
        elif self.returncode is not None and self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = str(-self.returncode)
            head = f"command killed by signal {name}"
        else:
            head = f"command exited with code {self.returncode}"
        if self.parse_errors:
            head += f"; bad {METRIC_PREFIX} lines: {'; '.join(self.parse_errors[:3])}"
        return f"{head}\n{self.stderr_tail}" if self.stderr_tail else head


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[str], grace: float) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after ``grace``."""
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    on_line: Callable[[MetricLine], None],
    stop: threading.Event,
    timeout: float | None = None,
    kill_grace: float = 10.0,
    echo: Callable[[str, str], None] | None = None,
    cwd: Path | None = None,
) -> CommandOutcome:
    """Run ``argv`` to the end, or until ``stop`` is set or ``timeout`` passes.

    Args:
        argv: the substituted command line.
        env: the child's complete environment.
        on_line: called (from a reader thread) for every ``HPO_METRIC`` line as it arrives.
        stop: set by the worker to stop the child (should_stop, lease lost, shutdown);
            the child gets SIGTERM and ``kill_grace`` seconds to print a final result.
        timeout: seconds before the child is killed and the run counts as failed.
        kill_grace: seconds between SIGTERM and SIGKILL.
        echo: told ("stdout"|"stderr", line) for every output line (for ``--echo``).
        cwd: working directory of the child.
    """
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    except OSError as exc:
        return CommandOutcome(None, [], "", 0.0, start_error=f"cannot start {argv[0]!r}: {exc}")
    guard = GroupGuard(proc.pid)
    lines: list[MetricLine] = []
    parse_errors: list[str] = []
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def read_stdout() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if echo is not None:
                echo("stdout", raw.rstrip("\n"))
            try:
                parsed = parse_metric_line(raw)
            except MetricParseError as exc:
                if len(parse_errors) < 10:
                    parse_errors.append(str(exc))
                continue
            if parsed is not None:
                lines.append(parsed)
                on_line(parsed)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            if echo is not None:
                echo("stderr", raw.rstrip("\n"))
            tail.append(raw.rstrip("\n"))

    readers = [
        threading.Thread(target=read_stdout, name=f"stdout-{proc.pid}", daemon=True),
        threading.Thread(target=read_stderr, name=f"stderr-{proc.pid}", daemon=True),
    ]
    for t in readers:
        t.start()
    timed_out = stopped = False
    try:
        while proc.poll() is None:
            if stop.wait(0.1):
                stopped = True
                _terminate(proc, kill_grace)
                break
            if timeout is not None and time.monotonic() - start > timeout:
                timed_out = True
                _terminate(proc, kill_grace)
                break
    finally:
        # Whatever the child left running in its group must not outlive the trial.
        _signal_group(proc, signal.SIGKILL)
        guard.release()
    for t in readers:
        t.join(timeout=5.0)
    stderr_tail = "\n".join(tail)[-STDERR_TAIL_CHARS:]
    return CommandOutcome(
        returncode=proc.returncode,
        lines=lines,
        stderr_tail=stderr_tail,
        elapsed_s=time.monotonic() - start,
        timed_out=timed_out,
        stopped=stopped,
        parse_errors=parse_errors,
    )
