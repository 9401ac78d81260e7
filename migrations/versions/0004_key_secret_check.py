"""The key-secret check value: which server secret this database's API-key hashes use.

Without it, a process with another secret (another host that generated its own, a CLI
reaching the database under another URL, a restore without the secret file) fails every
authentication silently; with it, such a process refuses to start and says why.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 15:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_secret_check",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("check_value", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("key_secret_check")
