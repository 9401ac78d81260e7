"""Drop the (state, lease_expires_at) index so heartbeats and reports update in place.

Every heartbeat and report moves ``trials.lease_expires_at``. While that column was
indexed, PostgreSQL could not make the update a HOT (heap-only) update, so each one
wrote a new entry into all eleven indexes of ``trials``. The only query that used the
index, the reclaim scan for expired leases, finds leased trials through
``ix_trials_state_created`` (state first) and filters the few of them on the lease end.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_state_lease")


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index("ix_trials_state_lease", ["state", "lease_expires_at"], unique=False)
