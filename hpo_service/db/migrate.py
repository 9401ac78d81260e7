"""Run Alembic from code, so `hpo serve`, `hpo migrate` and the tests upgrade the same way."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

__all__ = [
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "migrations_dir",
    "upgrade_to_head",
]


def migrations_dir() -> Path:
    """Where the migration scripts are: inside the package, else at the checkout's root.

    ``migrations/`` lives at the repository root and the wheel ships it as package data
    (``hpo_service/migrations``, see ``[tool.hatch.build.targets.wheel.force-include]``),
    because an installed package has no repository root to look in. A checkout has no
    ``hpo_service/migrations``, so there the root's scripts are used, the ones being
    edited. (An editable install also copies them into site-packages, but the package is
    imported from the checkout, so that copy, stale after the next new migration, is never
    read.)

    Raises:
        FileNotFoundError: neither exists (a broken install), said plainly rather than as
            Alembic's error about a missing ``env.py``.
    """
    packaged = files("hpo_service") / "migrations"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"no migration scripts: neither {packaged} (installed) nor {checkout} (checkout)"
    )


def alembic_config() -> Config:
    """An Alembic config pointing at our migration scripts, with no URL of its own."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Apply every migration not yet applied. Idempotent."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Revert migrations down to ``revision`` (``base`` = empty schema)."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
