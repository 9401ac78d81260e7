"""Tenant scoping and role checks shared by every use case.

A resource of another tenant answers 404, exactly like one that does not exist, so ids
leak nothing across tenants; a visible resource with too weak a role answers 403.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from hpo_service.db.ids import is_wellformed
from hpo_service.db.models import StudyRow, TrialRow
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.domain import Principal, Role
from hpo_service.errors import PermissionDeniedError, StudyNotFoundError, TrialNotFoundError

__all__ = ["require_role", "visible_study", "visible_trial"]


def require_role(principal: Principal, role: Role) -> None:
    """Raise 403 unless the caller's role includes ``role``."""
    if not principal.role.includes(role):
        raise PermissionDeniedError(f"this action needs the {role.value!r} role")


def visible_study(
    session: Session, principal: Principal, study_id: str, *, lock: bool = False
) -> StudyRow:
    """The study if the caller may see it, else StudyNotFoundError."""
    if not is_wellformed(study_id):
        raise StudyNotFoundError(study_id)
    tenant = None if principal.is_admin else principal.tenant
    row = StudyRepository(session).get(study_id, tenant=tenant, lock=lock)
    if row is None:
        raise StudyNotFoundError(study_id)
    return row


def visible_trial(
    session: Session, principal: Principal, trial_id: str, *, lock: bool = False
) -> tuple[TrialRow, StudyRow]:
    """The trial and its study if the caller may see them, else TrialNotFoundError."""
    if not is_wellformed(trial_id):
        raise TrialNotFoundError(trial_id)
    found = TrialRepository(session).get(trial_id, lock=lock)
    if found is None or not principal.can_see(found[1].tenant):
        raise TrialNotFoundError(trial_id)
    return found
