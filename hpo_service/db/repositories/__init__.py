"""Repositories: each holds every query on one aggregate; they flush, never commit."""

from hpo_service.db.repositories.admin import AdminRepository
from hpo_service.db.repositories.api_keys import ApiKeyRepository
from hpo_service.db.repositories.audit import AuditRepository
from hpo_service.db.repositories.dump import DumpRepository
from hpo_service.db.repositories.export import ExportRepository
from hpo_service.db.repositories.idempotency import IdempotencyRepository
from hpo_service.db.repositories.studies import StudyRepository
from hpo_service.db.repositories.trial_filter import TrialFilter
from hpo_service.db.repositories.trials import TrialRepository

__all__ = [
    "AdminRepository",
    "ApiKeyRepository",
    "AuditRepository",
    "DumpRepository",
    "ExportRepository",
    "IdempotencyRepository",
    "StudyRepository",
    "TrialFilter",
    "TrialRepository",
]
