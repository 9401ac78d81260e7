"""Who is calling: an API key's role and tenant, and what each role may do."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Principal", "Role"]


class Role(enum.StrEnum):
    """Roles nest: ``admin`` ⊃ ``client`` ⊃ ``worker``."""

    WORKER = "worker"
    CLIENT = "client"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the hierarchy; a higher rank may do everything a lower one may."""
        return (Role.WORKER, Role.CLIENT, Role.ADMIN).index(self)

    def includes(self, other: Role) -> bool:
        """Whether this role may do what ``other`` may."""
        return self.rank >= other.rank


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    key_id: str
    role: Role
    tenant: str

    @property
    def is_admin(self) -> bool:
        """Admins see every tenant."""
        return self.role is Role.ADMIN

    def can_see(self, tenant: str) -> bool:
        """Whether resources of ``tenant`` are visible (others answer 404, not 403)."""
        return self.is_admin or tenant == self.tenant
