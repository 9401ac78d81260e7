"""``hpo export`` and ``hpo import``: a whole database or one study, as lossless JSONL.

``cli/main.py`` hooks these in with ``add_admin_parsers(subparsers)``. Like every command that
touches the database they take ``--database-url``, then ``HPO_DATABASE_URL``, then SQLite
``./hpo.db``; both migrate first, so a fresh database can receive an import.

``hpo import --from-optuna STORAGE_URL [--study NAME]`` is the exception: it turns an
Optuna study's finished history into a new service study through the API (``--server``,
``--key``), not the database, so that a user with a ``client`` key can bring history to
any service, and the study is validated and owned (tenant) like any other one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from hpo_service.cli.database import open_migrated
from hpo_service.client.backoff import GiveUpError
from hpo_service.client.client import HPOClient
from hpo_service.client.errors import ProblemError
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.errors import HPOError
from hpo_service.services import dump

__all__ = ["add_admin_parsers", "cmd_export", "cmd_import", "cmd_import_optuna"]


def _database(args: argparse.Namespace, *, check_secret: bool = False) -> Database:
    """Open and migrate the database; with ``check_secret``, refuse a foreign key secret.

    ``import`` checks (it writes key rows, which must verify afterwards; the check also
    records the secret of a fresh target); ``export`` only reads, under any secret.
    """
    overrides = {"database_url": args.database_url} if args.database_url else {}
    return open_migrated(Settings(**overrides), check_secret=check_secret)


@contextmanager
def _opened(path: str, mode: str) -> Iterator[IO[Any]]:
    if path == "-":
        yield sys.stdout if "w" in mode else sys.stdin
        return
    with Path(path).open(mode, encoding="utf-8") as handle:
        yield handle


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing"


def cmd_export(args: argparse.Namespace) -> int:
    """Write the database (or ``--study``) to ``--output`` (default stdout).

    Progress goes to stderr so stdout can carry the export itself.
    """
    db = _database(args)
    try:
        with _opened(args.output, "w") as out:
            counts = dump.dump(db, out, study_id=args.study, now=utcnow())
    except HPOError as exc:
        sys.stderr.write(f"error: {exc.detail}\n")
        return 2
    finally:
        db.dispose()
    sys.stderr.write(f"exported {_summary(counts.written)}\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Load a file written by ``hpo export``, all or nothing."""
    db = _database(args, check_secret=True)
    try:
        with _opened(args.input, "r") as source:
            counts = dump.load(db, source, skip_existing=args.skip_existing, now=utcnow())
    except HPOError as exc:
        sys.stderr.write(f"error: {exc.detail}\n")
        return 2
    finally:
        db.dispose()
    message = f"imported {_summary(counts.written)}"
    if counts.skipped:
        message += f"; skipped existing {_summary(counts.skipped)}"
    sys.stderr.write(message + "\n")
    for warning in counts.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    return 0


def cmd_import_optuna(args: argparse.Namespace) -> int:
    """Create a service study from an Optuna study's history; print its id last."""
    if not args.key:
        sys.stderr.write("error: --from-optuna needs --key (or $HPO_API_KEY), role client\n")
        return 2
    try:
        from hpo_service.integrations.optuna import import_optuna_study
    except ImportError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    with HPOClient(args.server, args.key) as client:
        try:
            report = import_optuna_study(
                client, args.from_optuna, args.study, name=args.name, family=args.family
            )
        except (ValueError, KeyError) as exc:  # no such study, several, nothing to import
            sys.stderr.write(f"error: {exc}\n")
            return 2
        except ProblemError as exc:
            sys.stderr.write(f"error: the service refused the import: {exc}\n")
            return 2
        except GiveUpError as exc:
            sys.stderr.write(f"error: service unreachable at {args.server}: {exc.last}\n")
            return 1
    sys.stderr.write(
        f"imported {report.imported} trials of Optuna study {report.optuna_study!r} "
        f"({report.skipped} left out: failed, running or without a finite value)\n"
    )
    for dropped in report.dropped_params:
        sys.stderr.write(f"warning: parameter left out of the space: {dropped}\n")
    print(report.study_id)
    return 0


def _dispatch_import(args: argparse.Namespace) -> int:
    if (args.input is None) == (args.from_optuna is None):
        sys.stderr.write("error: give a file written by `hpo export`, or --from-optuna URL\n")
        return 2
    return cmd_import_optuna(args) if args.from_optuna else cmd_import(args)


def add_admin_parsers(subparsers: Any) -> None:
    """Register ``export`` and ``import`` on the ``hpo`` command's subparsers."""
    exp = subparsers.add_parser("export", help="write the database or one study as lossless JSONL")
    exp.add_argument("--study", help="study id (default: the whole database)")
    exp.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    exp.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $HPO_DATABASE_URL or ./hpo.db)"
    )
    exp.set_defaults(func=cmd_export)

    imp = subparsers.add_parser(
        "import",
        help="load a file written by `hpo export`, or an Optuna study's history",
    )
    imp.add_argument("input", nargs="?", help="file to read ('-' for stdin)")
    imp.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep keys and studies that already exist instead of refusing the import",
    )
    imp.add_argument(
        "--database-url", help="SQLAlchemy URL (default: $HPO_DATABASE_URL or ./hpo.db)"
    )
    optuna = imp.add_argument_group(
        "from Optuna", "a new service study from an Optuna study's finished trials, via the API"
    )
    optuna.add_argument(
        "--from-optuna", metavar="STORAGE_URL", help="Optuna storage, e.g. sqlite:///optuna.db"
    )
    optuna.add_argument("--study", help="the Optuna study's name (if the storage holds several)")
    optuna.add_argument("--name", help="the service study's name (default optuna:<study>)")
    optuna.add_argument(
        "--family", help="the service study's family, to make it a transfer source for it"
    )
    optuna.add_argument(
        "--server",
        default=os.environ.get("HPO_SERVER", "http://127.0.0.1:8000"),
        help="service base URL (default $HPO_SERVER or http://127.0.0.1:8000)",
    )
    optuna.add_argument(
        "--key", default=os.environ.get("HPO_API_KEY"), help="client key (default $HPO_API_KEY)"
    )
    imp.set_defaults(func=_dispatch_import)
