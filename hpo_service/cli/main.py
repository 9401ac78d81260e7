"""The ``hpo`` command: serve, migrate, keys (and, as they land, worker and extrapolate).

Every command that touches the database takes ``--database-url`` and falls back to
``HPO_DATABASE_URL``, then to SQLite ``./hpo.db``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from hpo_service.cli.admin import add_admin_parsers
from hpo_service.cli.database import open_migrated
from hpo_service.cli.ray_workers import add_ray_workers_parser
from hpo_service.cli.studies import add_study_parsers
from hpo_service.cli.targets import parse_target
from hpo_service.cli.worker import add_worker_parser
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.key_secret_check import KeySecretMismatchError
from hpo_service.domain import Principal, Role
from hpo_service.errors import HPOError
from hpo_service.services import api_keys, scaling

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return Settings(**overrides)


def _migrate(settings: Settings, *, check_secret: bool = True) -> Database:
    """Open and migrate the database; check its key-hash secret unless told not to.

    ``hpo migrate`` and ``hpo extrapolate`` skip the check: they handle no keys, and a
    job run without the servers' secret must not record its own as the database's.
    """
    return open_migrated(settings, check_secret=check_secret)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply every pending migration."""
    settings = _settings(args)
    _migrate(settings, check_secret=False).dispose()
    print(f"database at head: {settings.database_url}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Migrate, make sure an admin key exists, then run uvicorn."""
    import uvicorn

    from hpo_service.api.serving import NoDelayHTTPProtocol

    settings = _settings(args)
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    if args.workers:
        settings.workers = args.workers
    db = _migrate(settings)
    issued = api_keys.ensure_admin_key(db, now=utcnow(), key=settings.bootstrap_admin_key)
    db.dispose()
    if issued is not None and settings.bootstrap_admin_key is None:
        print("No API key existed, so an admin key was created. It is shown only once:")
        print(f"  {issued.key}")
        sys.stdout.flush()
    os.environ["HPO_DATABASE_URL"] = settings.database_url  # for worker processes
    if settings.workers > 1:
        uvicorn.run(
            "hpo_service.api.app:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            http=NoDelayHTTPProtocol,
        )
        return 0
    from hpo_service.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=NoDelayHTTPProtocol,
    )
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Create a key and print it alone on the last line."""
    settings = _settings(args)
    db = _migrate(settings)
    issued = api_keys.create_key(
        db, role=Role(args.role), tenant=args.tenant, name=args.name or "", now=utcnow()
    )
    db.dispose()
    print(f"created {issued.role.value} key {issued.id} for tenant {issued.tenant!r}")
    print(issued.key)
    return 0


def cmd_extrapolate(args: argparse.Namespace) -> int:
    """Print the target-scale values of a study's best (or named) trial as JSON."""
    settings = _settings(args)
    # Reads a study and computes; never hashes or verifies a key (see cli/database.py).
    db = _migrate(settings, check_secret=False)
    admin = Principal(key_id="cli", role=Role.ADMIN, tenant="cli")
    try:
        result = scaling.extrapolate_trial(
            db,
            admin,
            args.study,
            target=parse_target(args.target),
            trial_id=args.trial,
            use_ladder=args.ladder,
        )
    except HPOError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(json.dumps(result.to_json(), indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description="hpo_service command line")
    sub = parser.add_subparsers(dest="command", required=True)

    def db_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--database-url", help="SQLAlchemy URL (default: $HPO_DATABASE_URL or ./hpo.db)"
        )

    serve = sub.add_parser("serve", help="migrate and run the HTTP service")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--workers", type=int, help="server processes (default 1)")
    db_arg(serve)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    db_arg(migrate)
    migrate.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an API key (printed once)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    db_arg(create)
    create.set_defaults(func=cmd_keys_create)

    extra = sub.add_parser("extrapolate", help="per-module values at a target model shape")
    extra.add_argument("--study", required=True, help="study id")
    extra.add_argument("--target", required=True, help="e.g. width=4096,depth=32,batch_size=512")
    extra.add_argument("--trial", help="trial id (default: the study's best)")
    extra.add_argument(
        "--ladder",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="apply the family ladder's drifts and verdicts (default: when the family "
        "holds more than one proxy shape)",
    )
    db_arg(extra)
    extra.set_defaults(func=cmd_extrapolate)

    add_worker_parser(sub)
    add_admin_parsers(sub)
    add_study_parsers(sub)
    add_ray_workers_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpo`` console script."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeySecretMismatchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
