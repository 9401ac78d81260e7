"""``hpo studies create|list|show|rungs`` and ``hpo trials list``: studies over HTTP, via the SDK.

Unlike ``serve``, ``migrate`` or ``export``, these commands talk to a running service the
way any user does, with a URL (``--server``, default ``$HPO_SERVER``) and an API key
(``--key``, default ``$HPO_API_KEY``), so that they see exactly what the API shows a key
of that tenant and role. They go through ``hpo_service.client`` and import nothing of the
server, which keeps this module usable where only the SDK's dependencies are installed.

Output is a table for people (rich on a terminal, aligned plain text otherwise, so that
``grep`` and ``awk`` work) or, with ``--json``, the service's objects for programs.

Exit codes: 0 on success; 2 for anything the user has to fix: a problem answer from the
service (printed as ``error: <title>: <detail>``), an unreachable service, an unreadable
spec file. 1 only when the service answers something that breaks API.md.

``cli/main.py`` registers the commands with ``add_study_parsers(subparsers)``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pydantic

from hpo_service.cli.targets import parse_target
from hpo_service.client import HPOClient, ProblemError, Study, Trial

__all__ = [
    "SpecFileError",
    "add_study_parsers",
    "cmd_studies_create",
    "cmd_studies_list",
    "cmd_studies_rungs",
    "cmd_studies_show",
    "cmd_trials_list",
    "load_spec",
]

EXIT_OK = 0
EXIT_CONTRACT = 1
EXIT_USER = 2
TRIAL_STATES = ("requested", "active", "stopping", "completed", "failed", "infeasible")
"""API.md's trial states in lifecycle order: how ``show`` orders its counts."""


class SpecFileError(Exception):
    """The study spec file cannot be read or is not one JSON/YAML object."""


# Arguments --------------------------------------------------------------------------------
def add_study_parsers(subparsers: Any) -> None:
    """Register ``hpo studies ...`` and ``hpo trials ...`` on the ``hpo`` parser.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned.
    """
    studies = subparsers.add_parser("studies", help="create, list and show studies (over HTTP)")
    studies_sub = studies.add_subparsers(dest="studies_command", required=True)

    create = studies_sub.add_parser(
        "create",
        help="create a study from a JSON or YAML spec",
        description="POST the spec (API.md's study body) to /v1/studies. Files ending in "
        ".yaml or .yml are read as YAML (needs PyYAML), anything else as JSON; - is stdin.",
    )
    create.add_argument("--file", required=True, help="spec.json, spec.yaml or - (stdin)")
    _common(create)
    create.set_defaults(func=cmd_studies_create)

    listing = studies_sub.add_parser("list", help="list studies, oldest first")
    listing.add_argument("--family", help="only this family")
    listing.add_argument("--state", help="only this state (active, paused, completed)")
    listing.add_argument("--name", help="only studies with exactly this name")
    listing.add_argument("--limit", type=_positive, help="show at most this many")
    _common(listing)
    listing.set_defaults(func=cmd_studies_list)

    show = studies_sub.add_parser("show", help="a study: state, trial counts, best trial")
    show.add_argument("study_id", metavar="ID", help="study id")
    _common(show)
    show.set_defaults(func=cmd_studies_show)

    rungs = studies_sub.add_parser(
        "rungs",
        help="create the depth rungs the family ladder needs for a target",
        description="POST /v1/studies/{id}/rungs: one study per depth from the proxy's to "
        "the target's, sweeping one value (the global LR) on a grid around the best with "
        "the rest pinned. Run workers on them; extrapolate then applies the fitted drift.",
    )
    rungs.add_argument("study_id", metavar="ID", help="a tuned study with family and scale")
    rungs.add_argument("--target", required=True, help="target axes, e.g. width=4096,depth=32")
    rungs.add_argument("--param", default="lr", help="the log-scaled float to sweep (lr)")
    rungs.add_argument("--replicates", type=_positive, help="trials per grid point (2)")
    rungs.add_argument("--trial", dest="trial_id", help="centre on this trial (default: best)")
    _common(rungs)
    rungs.set_defaults(func=cmd_studies_rungs)

    trials = subparsers.add_parser("trials", help="list a study's trials (over HTTP)")
    trials_sub = trials.add_subparsers(dest="trials_command", required=True)
    tlist = trials_sub.add_parser("list", help="list a study's trials")
    tlist.add_argument("--study", required=True, help="study id")
    tlist.add_argument("--state", help="only this state (" + ", ".join(TRIAL_STATES) + ")")
    tlist.add_argument(
        "--order-by", choices=["number", "value"], help="number (default) or best value first"
    )
    tlist.add_argument("--limit", type=_positive, help="show at most this many")
    _common(tlist)
    tlist.set_defaults(func=cmd_trials_list)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("HPO_SERVER", "http://127.0.0.1:8000"),
        help="service base URL (default $HPO_SERVER or http://127.0.0.1:8000)",
    )
    p.add_argument("--key", default=os.environ.get("HPO_API_KEY"), help="API key ($HPO_API_KEY)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


# Commands ---------------------------------------------------------------------------------
def cmd_studies_create(args: argparse.Namespace) -> int:
    """Create a study from ``--file`` and show it."""
    try:
        spec = load_spec(args.file)
    except SpecFileError as exc:
        return _fail(str(exc))

    def create(client: HPOClient) -> None:
        study = client.studies.create(spec)
        if args.json:
            _print_json(study.model_dump(mode="json"))
            return
        _print_pairs(_study_pairs(study))

    return _with_client(args, create)


def cmd_studies_list(args: argparse.Namespace) -> int:
    """List the key's studies (every page, up to ``--limit``)."""

    def listing(client: HPOClient) -> None:
        found = client.studies.iter(family=args.family, state=args.state, name=args.name)
        studies = list(itertools.islice(found, args.limit))
        if args.json:
            _print_json([s.model_dump(mode="json") for s in studies])
            return
        rows = [
            [
                s.id,
                s.name,
                s.family or "-",
                s.state,
                s.algorithm,
                str(sum(s.trial_counts.values())),
                str(s.trial_counts.get("completed", 0)),
                _when(s.created_at),
            ]
            for s in studies
        ]
        headers = ["ID", "NAME", "FAMILY", "STATE", "ALGORITHM", "TRIALS", "DONE", "CREATED"]
        _print_table(headers, rows, empty="no studies")

    return _with_client(args, listing)


def cmd_studies_show(args: argparse.Namespace) -> int:
    """Show one study: its settings, its trials by state and its best trial(s)."""

    def show(client: HPOClient) -> None:
        study = client.studies.get(args.study_id)
        best = client.studies.best(study.id)
        if args.json:
            _print_json(
                {
                    "study": study.model_dump(mode="json"),
                    "best": [t.model_dump(mode="json") for t in best],
                }
            )
            return
        _print_pairs(_study_pairs(study))
        print()
        _print_table(["STATE", "TRIALS"], _count_rows(study.trial_counts))
        print()
        if not best:
            print("best: none yet (no completed trial)")
            return
        names = study.objective_names()
        _print_table(
            ["BEST", *names, "PARAMS"],
            [[f"#{t.number}", *(_number(t.value(m)) for m in names), _params(t)] for t in best],
        )

    return _with_client(args, show)


def cmd_studies_rungs(args: argparse.Namespace) -> int:
    """Create a study's depth rungs and list them."""
    target = parse_target(args.target)

    def create(client: HPOClient) -> None:
        made = client.studies.rungs(
            args.study_id,
            target,
            param=args.param,
            replicates=args.replicates,
            trial_id=args.trial_id,
        )
        if args.json:
            _print_json([s.model_dump(mode="json") for s in made])
            return
        rows = [
            [
                s.id,
                s.name,
                str((s.scale or {}).get("proxy", {}).get("width", "-")),
                str((s.scale or {}).get("proxy", {}).get("depth", "-")),
                str(sum(s.trial_counts.values())),
            ]
            for s in made
        ]
        _print_table(["ID", "NAME", "WIDTH", "DEPTH", "QUEUED"], rows, empty="no rungs")

    return _with_client(args, create)


def cmd_trials_list(args: argparse.Namespace) -> int:
    """List one study's trials with their objective value and parameters."""

    def listing(client: HPOClient) -> None:
        # The study names the objective metric, and an unknown id fails here, clearly.
        study = client.studies.get(args.study)
        found = client.trials.iter(study.id, state=args.state, order_by=args.order_by)
        trials = list(itertools.islice(found, args.limit))
        if args.json:
            _print_json([t.model_dump(mode="json") for t in trials])
            return
        metric = study.objective.metric
        headers = ["NUMBER", "STATE", metric.upper(), "ATTEMPT", "WORKER", "SOURCE", "PARAMS"]
        _print_table(headers, [_trial_row(t, metric) for t in trials], empty="no trials")

    return _with_client(args, listing)


# The spec file ----------------------------------------------------------------------------
def load_spec(path: str) -> dict[str, Any]:
    """Read a study spec: YAML for ``.yaml``/``.yml``, JSON otherwise, stdin for ``-``.

    The spec is not validated here: the service does that, and its problem answer names
    the offending field better than a copy of its rules could.

    Raises:
        SpecFileError: unreadable file, bad syntax, PyYAML missing, or not one object.
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        data = _parse_yaml(text, path)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecFileError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecFileError(f"{path} must hold one object (the study), not {type(data).__name__}")
    return data


def _parse_yaml(text: str, path: str) -> Any:
    try:
        import yaml  # only YAML specs need it, and it is not a runtime dependency
    except ImportError:
        raise SpecFileError(
            f"{path}: reading YAML needs PyYAML (pip install pyyaml); or give the spec as JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecFileError(f"{path} is not valid YAML: {exc}") from exc


# Running against the service ----------------------------------------------------------------
def _with_client(args: argparse.Namespace, action: Callable[[HPOClient], None]) -> int:
    """Run ``action`` with a client for ``--server``/``--key``; turn failures into exit codes."""
    # `hpo` logs at INFO, where httpx would add a line per request to the output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        with HPOClient(args.server, args.key) as client:
            action(client)
    except ProblemError as exc:
        title = exc.title or f"HTTP {exc.status}"
        lines = [f"{title}: {exc.detail}" if exc.detail else title]
        if len(exc.errors) > 1:  # the detail names the first only
            lines += [f"  {_where(e.get('loc'))}: {e.get('msg')}" for e in exc.errors]
        return _fail("\n".join(lines))
    except httpx.TransportError as exc:  # refused, timed out, DNS, bad scheme
        return _fail(f"cannot reach the service at {args.server}: {str(exc) or type(exc).__name__}")
    except httpx.InvalidURL as exc:
        return _fail(f"--server {args.server!r} is not a URL: {exc}")
    except pydantic.ValidationError as exc:
        return _fail(f"the service at {args.server} answered outside the API: {exc}", EXIT_CONTRACT)
    return EXIT_OK


def _fail(message: str, code: int = EXIT_USER) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def _where(loc: Any) -> str:
    if isinstance(loc, list | tuple):
        return ".".join(str(p) for p in loc) or "request"
    return str(loc)


# Rendering --------------------------------------------------------------------------------
def _study_pairs(study: Study) -> list[tuple[str, str]]:
    goals = ", ".join(f"{o.metric} ({o.goal})" for o in study.objectives or [study.objective])
    return [
        ("id", study.id),
        ("name", study.name),
        ("family", study.family or "-"),
        ("state", study.state),
        ("algorithm", study.algorithm),
        ("objective", goals),
        ("parameters", ", ".join(study.space.names())),
        ("max_trials", "unlimited" if study.max_trials is None else str(study.max_trials)),
        ("seed", "-" if study.seed is None else str(study.seed)),
        ("created", _when(study.created_at)),
    ]


def _count_rows(counts: dict[str, int]) -> list[list[str]]:
    states = [*TRIAL_STATES, *sorted(set(counts) - set(TRIAL_STATES))]
    rows = [[s, str(counts.get(s, 0))] for s in states]
    return [*rows, ["total", str(sum(counts.values()))]]


def _trial_row(trial: Trial, metric: str) -> list[str]:
    return [
        str(trial.number),
        trial.state,
        _number(trial.value(metric)),
        str(trial.attempt),
        trial.worker_id or "-",
        trial.source,
        _params(trial),
    ]


def _params(trial: Trial) -> str:
    return " ".join(
        f"{k}={_number(v) if isinstance(v, float) else v}" for k, v in trial.params.items()
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _print_pairs(pairs: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key:<{width}}  {value}")


def _print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str | None = None
) -> None:
    """A rich table on a terminal; aligned plain text (one line per row) otherwise."""
    cells = [list(r) for r in rows]
    if not cells and empty is not None:
        print(empty)
        return
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(*headers)
        for row in cells:
            table.add_row(*(Text(cell) for cell in row))  # Text: cells are data, not markup
        Console(file=sys.stdout).print(table)
        return
    widths = [max(len(c) for c in column) for column in zip(headers, *cells, strict=True)]
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
