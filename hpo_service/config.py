"""Settings, read from ``HPO_*`` environment variables and passed around explicitly.

Nothing reads the environment at import time: ``hpo serve`` builds one ``Settings`` and
hands it to ``create_app``; tests build their own.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_URL", "Settings"]

DEFAULT_DATABASE_URL = "sqlite:///./hpo.db"


class Settings(BaseSettings):
    """Every knob of the service. Environment: ``HPO_<FIELD>`` (e.g. ``HPO_LEASE_SECONDS``).

    The revocation window (``auth_cache_seconds``, ``HPO_AUTH_CACHE_SECONDS``): each server
    process caches verified keys so that heartbeats do not read the database. A key
    revoked through one process stops working there at once, because the revoking
    request evicts it from that process's cache; every other process trusts its cached
    entry until it is ``auth_cache_seconds`` old, so there the revoked key keeps working
    for up to that long. 0 closes the window at the cost of one database read per request.
    """

    model_config = SettingsConfigDict(env_prefix="HPO_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL; sqlite:///path (default ./hpo.db) or postgresql://...",
    )
    host: str = Field("127.0.0.1", description="Address `hpo serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `hpo serve` listens on.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes for `hpo serve`.")
    lease_seconds: float = Field(
        300.0, gt=0, description="How long a leased trial stays with a silent worker."
    )
    max_attempts: int = Field(3, ge=1, description="Default leases per trial before `failed`.")
    reclaim_interval_seconds: float = Field(
        15.0, gt=0, description="Period of the server task that requeues expired leases."
    )
    idempotency_ttl_seconds: float = Field(
        86400.0, gt=0, description="How long an Idempotency-Key replays its first response."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest accepted request body; larger gets 413."
    )
    max_json_depth: int = Field(32, ge=4, description="Deepest accepted JSON nesting.")
    sqlite_busy_timeout_ms: int = Field(
        30_000, ge=0, description="How long SQLite waits for a lock before giving up."
    )
    db_pool_size: int = Field(20, ge=1, description="PostgreSQL connection pool size.")
    bootstrap_admin_key: str | None = Field(
        None,
        description="If set and no key exists, `hpo serve` stores this admin key instead of "
        "generating one (for containers).",
    )
    auth_failure_limit: int = Field(
        20, ge=1, description="Failed authentications per source and window before 429."
    )
    auth_failure_window_seconds: float = Field(
        60.0, gt=0, description="Window of the failed-authentication limit."
    )
    auth_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a process trusts a verified key without asking the database. "
        "A revoked key stops at once in the process that revoked it and within this time "
        "in every other server process; 0 disables the cache.",
    )
    key_hash_secret: SecretStr | None = Field(
        None,
        description="Server secret API keys are hashed with (HMAC-SHA256); set the same value "
        "on every server. Unset: generated once and kept in a file next to a SQLite database "
        "(else under ~/.config/hpo), which is right for one machine only.",
    )
    log_level: str = Field("info", description="Log level of the service.")
    suggestion_deadline_seconds: float = Field(
        5.0, gt=0, description="How long a suggestion request waits for the designer."
    )

    @property
    def key_secret(self) -> str | None:
        """The configured key-hash secret in clear (None: use the generated one)."""
        return self.key_hash_secret.get_secret_value() if self.key_hash_secret else None

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite (one serialised writer, no row locks)."""
        return self.database_url.startswith("sqlite")
