"""Admin: the audit log, and the trial indexes of cross-study history queries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# (name, columns) of the keyset indexes GET /v1/admin/trials pages along.
TRIAL_INDEXES = [
    ("ix_trials_created", ["created_at", "id"]),
    ("ix_trials_study_created", ["study_id", "created_at", "id"]),
    ("ix_trials_state_created", ["state", "created_at", "id"]),
    ("ix_trials_worker_created", ["worker_id", "created_at", "id"]),
    ("ix_trials_finished", ["finished_at", "id"]),
]


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_key_id", sa.String(length=32), nullable=True),
        sa.Column("actor_tenant", sa.String(length=128), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=True),
        sa.Column("detail", JSON_TYPE, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_at", ["at", "id"], unique=False)
        batch_op.create_index("ix_audit_log_action", ["action", "id"], unique=False)
    with op.batch_alter_table("trials", schema=None) as batch_op:
        for name, columns in TRIAL_INDEXES:
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        for name, _columns in reversed(TRIAL_INDEXES):
            batch_op.drop_index(name)
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_action")
        batch_op.drop_index("ix_audit_log_at")
    op.drop_table("audit_log")
