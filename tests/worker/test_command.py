"""Command mode pieces: placeholders, HPO_METRIC lines, result files, running a child."""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path

import pytest

from hpo_service.client.models import Study, Trial
from hpo_service.worker.command import (
    MetricLine,
    MetricParseError,
    PlaceholderError,
    final_result,
    format_value,
    parse_metric_line,
    placeholders,
    read_result_file,
    run_command,
    substitute,
    trial_environment,
)
from hpo_service.worker.trial_run import judge_result


# Placeholders ---------------------------------------------------------------------------
def test_substitute_replaces_names_with_dots_and_dashes() -> None:
    args = ["python", "train.py", "--lr", "{lr.hidden}", "--opt={optimizer}", "--w={warm-up}"]
    params = {"lr.hidden": 0.001, "optimizer": "muon", "warm-up": 100}
    assert substitute(args, params) == [
        "python",
        "train.py",
        "--lr",
        "0.001",
        "--opt=muon",
        "--w=100",
    ]


def test_substitute_keeps_full_float_precision() -> None:
    value = 0.00012345678901234567
    [out] = substitute(["{lr}"], {"lr": value})
    assert float(out) == value


def test_substitute_escapes_and_unrelated_braces() -> None:
    args = ['{{"json": {x}}}', "{not a name}", "{}"]
    assert substitute(args, {"x": 3}) == ['{"json": 3}', "{not a name}", "{}"]


def test_substitute_inactive_parameter_becomes_empty() -> None:
    assert substitute(["--ns={ns_steps}"], {}, inactive=frozenset({"ns_steps"})) == ["--ns="]


def test_substitute_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(PlaceholderError, match="typo"):
        substitute(["{typo}"], {"lr": 1.0})


def test_placeholders_lists_every_name_once() -> None:
    assert placeholders(["{a}", "--b={b}{a}", "{{c}}"]) == {"a", "b"}


@pytest.mark.parametrize(
    ("value", "text"),
    [(1, "1"), (0.5, "0.5"), (1e-05, "1e-05"), (True, "true"), ("adamw", "adamw"), (None, "")],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


# HPO_METRIC lines -----------------------------------------------------------------------
def test_parse_intermediate_line() -> None:
    line = parse_metric_line('HPO_METRIC {"step": 10, "train_loss": 0.5, "total_steps": 100}\n')
    assert line == MetricLine(step=10, metrics={"train_loss": 0.5}, total_steps=100)


def test_parse_final_line_with_nested_metrics_and_cost() -> None:
    line = parse_metric_line(
        '  HPO_METRIC {"metrics": {"val_loss": 1, "acc": 0.9}, "cost": {"gpu_seconds": 3}}'
    )
    assert line is not None
    assert line.step is None
    assert line.metrics == {"val_loss": 1.0, "acc": 0.9}
    assert line.cost == {"gpu_seconds": 3.0}


def test_parse_ignores_other_lines_and_non_numbers() -> None:
    assert parse_metric_line("epoch 3 loss 0.2") is None
    assert parse_metric_line("HPO_METRICS {}") is None
    line = parse_metric_line('HPO_METRIC {"val_loss": 0.1, "note": "x", "flag": true}')
    assert line is not None
    assert line.metrics == {"val_loss": 0.1}


def test_parse_keeps_non_finite_values_for_the_worker_to_judge() -> None:
    line = parse_metric_line('HPO_METRIC {"val_loss": NaN, "other": Infinity}')
    assert line is not None
    assert math.isnan(line.metrics["val_loss"])
    assert line.metrics["other"] == math.inf


@pytest.mark.parametrize(
    "raw", ["HPO_METRIC {oops", "HPO_METRIC [1, 2]", 'HPO_METRIC {"step": "ten", "x": 1}']
)
def test_parse_malformed_line_raises(raw: str) -> None:
    with pytest.raises(MetricParseError):
        parse_metric_line(raw)


# Final result ---------------------------------------------------------------------------
def test_final_result_prefers_final_lines_then_last_step_then_file(tmp_path: Path) -> None:
    steps = [MetricLine(1, {"val_loss": 3.0}), MetricLine(2, {"val_loss": 2.0})]
    assert final_result(steps, None) == ({"val_loss": 2.0}, {})
    finals = [
        *steps,
        MetricLine(None, {"val_loss": 1.5}, cost={"gpu_seconds": 2.0}),
        MetricLine(None, {"acc": 0.8}),
    ]
    assert final_result(finals, None) == ({"val_loss": 1.5, "acc": 0.8}, {"gpu_seconds": 2.0})
    assert final_result(finals, ({"val_loss": 1.0}, {"flops": 5.0})) == (
        {"val_loss": 1.0, "acc": 0.8},
        {"gpu_seconds": 2.0, "flops": 5.0},
    )


def test_read_result_file_forms(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    assert read_result_file(path) is None
    path.write_text("")
    assert read_result_file(path) is None
    path.write_text(json.dumps({"metrics": {"val_loss": 0.25}, "cost": {"gpu_seconds": 1}}))
    assert read_result_file(path) == ({"val_loss": 0.25}, {"gpu_seconds": 1.0})
    path.write_text(json.dumps({"val_loss": 0.5, "step": 3}))
    assert read_result_file(path) == ({"val_loss": 0.5}, {})
    path.write_text("not json")
    with pytest.raises(MetricParseError):
        read_result_file(path)


def test_judge_result() -> None:
    names = ["val_loss"]
    ok = judge_result(names, {"val_loss": 0.5, "x": math.nan}, {"c": 1}, partial=False)
    assert (ok.action, ok.metrics, ok.cost) == ("complete", {"val_loss": 0.5}, {"c": 1})
    assert judge_result(names, {"val_loss": math.inf}, {}, partial=False).action == "infeasible"
    missing = judge_result(names, {"acc": 1.0}, {}, partial=True)
    assert missing.action == "fail"
    assert not missing.retry
    assert "val_loss" in missing.reason


def test_judge_result_needs_every_objective_of_a_multi_objective_study() -> None:
    study = Study.model_validate(
        {
            "id": "st_1",
            "tenant": "t",
            "name": "mo",
            "objective": {"metric": "loss"},
            "objectives": [{"metric": "loss"}, {"metric": "latency", "goal": "minimize"}],
            "space": {"parameters": [{"name": "x", "type": "float", "low": 0, "high": 1}]},
            "algorithm": "random",
            "max_attempts": 3,
            "metadata": {},
            "state": "active",
            "created_at": "2025-01-01T00:00:00Z",
            "trial_counts": {},
        }
    )
    assert study.objective_names() == ["loss", "latency"]
    only_loss = judge_result(study.objective_names(), {"loss": 1.0}, {}, partial=False)
    assert (only_loss.action, "latency" in only_loss.reason) == ("fail", True)
    both = judge_result(study.objective_names(), {"loss": 1.0, "latency": 2.0}, {}, partial=False)
    assert both.action == "complete"


# Running a child ------------------------------------------------------------------------
def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_environment_has_trial_and_drops_the_key(tmp_path: Path) -> None:
    trial = Trial.model_validate(
        {
            "id": "tr_1",
            "number": 4,
            "attempt": 2,
            "study_id": "st_1",
            "params": {"lr": 0.1, "layers": 3},
            "state": "active",
            "measurements": [],
            "source": "engine",
        }
    )
    env = trial_environment(
        trial, "w-1", tmp_path / "r.json", {"PATH": "/bin", "HPO_API_KEY": "secret"}
    )
    assert "HPO_API_KEY" not in env
    assert env["HPO_PARAMS"] == '{"layers": 3, "lr": 0.1}'  # an int stays an int
    assert (env["HPO_TRIAL_ID"], env["HPO_TRIAL_NUMBER"], env["HPO_ATTEMPT"]) == ("tr_1", "4", "2")
    assert (env["HPO_STUDY_ID"], env["HPO_RESULT_FILE"]) == ("st_1", str(tmp_path / "r.json"))


def test_run_command_streams_lines_and_reports_exit(tmp_path: Path) -> None:
    argv = _script(
        tmp_path,
        (
            "import sys\n"
            'print(\'HPO_METRIC {"step": 1, "loss": 2}\', flush=True)\n'
            "print('HPO_METRIC {bad', flush=True)\n"
            "print('HPO_METRIC {\"val_loss\": 0.5}', flush=True)\n"
            "for i in range(40): print(f'err {i}', file=sys.stderr)\n"
            "sys.exit(4)\n"
        ),
    )
    seen: list[MetricLine] = []
    out = run_command(argv, {}, on_line=seen.append, stop=threading.Event(), timeout=30)
    assert out.returncode == 4
    assert not out.succeeded
    assert [line.step for line in seen] == [1, None]
    assert out.stderr_tail.splitlines()[-1] == "err 39"
    assert "err 19" not in out.stderr_tail  # only the last lines
    assert out.parse_errors
    reason = out.failure_reason()
    assert reason.startswith("command exited with code 4")
    assert "err 39" in reason


def test_run_command_stop_terminates_the_group(tmp_path: Path) -> None:
    argv = _script(
        tmp_path,
        (
            "import signal, time\n"
            "asked = []\n"
            "signal.signal(signal.SIGTERM, lambda *a: asked.append(1))\n"
            'print(\'HPO_METRIC {"step": 1, "val_loss": 0.9}\', flush=True)\n'
            "deadline = time.time() + 60\n"
            "while not asked and time.time() < deadline:\n"
            "    time.sleep(0.01)\n"
            "print('HPO_METRIC {\"val_loss\": 0.75}', flush=True)\n"
        ),
    )
    stop = threading.Event()

    def on_line(line: MetricLine) -> None:
        stop.set()

    start = time.monotonic()
    out = run_command(argv, {}, on_line=on_line, stop=stop, timeout=30, kill_grace=5)
    assert time.monotonic() - start < 10
    assert out.stopped
    assert final_result(out.lines, None)[0] == {"val_loss": 0.75}  # its last words count


def test_run_command_timeout_kills(tmp_path: Path) -> None:
    argv = _script(tmp_path, "import time\ntime.sleep(60)\n")
    out = run_command(
        argv, {}, on_line=lambda _: None, stop=threading.Event(), timeout=0.5, kill_grace=0.5
    )
    assert out.timed_out
    assert out.failure_reason().startswith("timed out")


def test_run_command_missing_program() -> None:
    out = run_command(["/nonexistent/prog"], {}, on_line=lambda _: None, stop=threading.Event())
    assert out.returncode is None
    assert "cannot start" in out.failure_reason()
