"""ORM rows. Repositories (db/repositories/) are the only code that queries them.

Indexes follow the hot queries: trials by (study, state) for leasing and counts, by
(state, lease expiry) for reclaiming, by (study, value) for ``best`` and ordering, by
worker for "my active trials".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hpo_service.db.base import Base, JSONType, UTCDateTime, utcnow

__all__ = [
    "ApiKeyRow",
    "AuditRow",
    "IdempotencyRow",
    "KeySecretCheckRow",
    "MeasurementRow",
    "StudyRow",
    "TrialRow",
]


class ApiKeyRow(Base):
    """An API key; only a hash of its secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    tenant: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class KeySecretCheckRow(Base):
    """A fingerprint of the server secret the API-key hashes of this database are keyed with.

    ``HMAC(secret, "hpo-key-secret-check")``: it tells whether a process holds the right
    secret without revealing it, so a process with another secret refuses to start
    instead of failing every authentication (``hpo_service.db.key_secret_check``).
    One row, id 1.
    """

    __tablename__ = "key_secret_check"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    check_value: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StudyRow(Base):
    """A study: its definition (JSON documents) and mutable state."""

    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_tenant_created", "tenant", "created_at", "id"),
        Index("ix_studies_family", "family"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256))
    family: Mapped[str | None] = mapped_column(String(128), nullable=True)
    objective: Mapped[dict[str, Any]] = mapped_column(JSONType)
    objectives: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    constraints: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    stopping: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    space: Mapped[dict[str, Any]] = mapped_column(JSONType)
    algorithm: Mapped[str] = mapped_column(String(64))
    transfer: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    scale: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    effective_space: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    max_trials: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_attempts: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16))
    next_number: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    trials: Mapped[list[TrialRow]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )


class TrialRow(Base):
    """A trial; ``value`` duplicates the objective so ordering and ``best`` use an index."""

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number", name="uq_trials_study_number"),
        Index("ix_trials_study_state", "study_id", "state", "number"),
        Index("ix_trials_study_value", "study_id", "value"),
        Index("ix_trials_worker", "worker_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    finish_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    study: Mapped[StudyRow] = relationship(back_populates="trials", lazy="raise")
    measurements: Mapped[list[MeasurementRow]] = relationship(
        back_populates="trial",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
        order_by="MeasurementRow.id",
    )


class MeasurementRow(Base):
    """An intermediate report of a trial; never deleted by a state change."""

    __tablename__ = "measurements"
    __table_args__ = (Index("ix_measurements_trial", "trial_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[str] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    elapsed_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    trial: Mapped[TrialRow] = relationship(back_populates="measurements", lazy="raise")


class IdempotencyRow(Base):
    """The first response to a POST carrying an ``Idempotency-Key``.

    ``status_code`` is null while the first request is still being processed, so a
    concurrent duplicate gets a 409 instead of running twice.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_created", "created_at"),)

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditRow(Base):
    """One admin or key action: who did what to which resource, and when.

    Rows are only ever appended. ``id`` grows monotonically, so the log pages by keyset on
    it (newest first) without a sort.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at", "id"),
        Index("ix_audit_log_action", "action", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    actor_tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    actor_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(256), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


# Indexes of the admin history queries (GET /v1/admin/trials): every ordering is a keyset
# over (timestamp, id), alone or behind one equality filter, so each page is an index range
# scan whatever the table size. Declared here so autogenerate sees them; created in 0002.
Index("ix_trials_created", TrialRow.created_at, TrialRow.id)
Index("ix_trials_study_created", TrialRow.study_id, TrialRow.created_at, TrialRow.id)
Index("ix_trials_state_created", TrialRow.state, TrialRow.created_at, TrialRow.id)
Index("ix_trials_worker_created", TrialRow.worker_id, TrialRow.created_at, TrialRow.id)
Index("ix_trials_finished", TrialRow.finished_at, TrialRow.id)
