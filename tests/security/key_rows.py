"""Reading what the database stores for a key, as an attacker with a dump would."""

from __future__ import annotations

from hpo_service.db.database import Database
from hpo_service.db.models import ApiKeyRow


def stored_hash(db: Database, key_id: str) -> str:
    """The key's stored ``secret_hash`` column."""
    with db.read() as session:
        row = session.get(ApiKeyRow, key_id)
        assert row is not None
        return row.secret_hash
