"""Trial history for admins and the dashboard: across studies and tenants, or one study's.

History pages by keyset over ``(timestamp, id)`` so page 1000 costs what page 1 does; the
token carries the ordering it was issued for, so a token reused with another
``order_by`` is refused instead of silently skipping rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpo_service.db.database import Database
from hpo_service.db.ids import is_wellformed
from hpo_service.db.mapping import to_trial
from hpo_service.db.repositories import AdminRepository, TrialFilter
from hpo_service.db.repositories.admin import HISTORY_ORDERS, HistoryOrder
from hpo_service.db.repositories.trial_filter import TrialWithStudy
from hpo_service.domain import Principal, Role, Trial
from hpo_service.services.access import require_role, visible_study
from hpo_service.services.pagination import Page, next_token, read_token

__all__ = ["AdminTrial", "admin_trial", "chart_trials", "list_trials"]


@dataclass(frozen=True)
class AdminTrial:
    """A trial with the study columns an admin needs to place it."""

    trial: Trial
    tenant: str
    study_name: str
    family: str | None


def admin_trial(row: TrialWithStudy) -> AdminTrial:
    """The admin view of a row, without measurements (lists that do not show them)."""
    return AdminTrial(to_trial(row.trial), row.tenant, row.study_name, row.family)


def list_trials(
    db: Database,
    principal: Principal,
    flt: TrialFilter,
    *,
    order_by: HistoryOrder = "created_at",
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[AdminTrial]:
    """Trials of every study and tenant matching ``flt``, one keyset page at a time.

    Measurements of the whole page come from one query, so a page is three statements
    whatever its size.
    """
    require_role(principal, Role.ADMIN)
    if flt.study_id is not None and not is_wellformed(flt.study_id):
        return Page([], None)
    keyset = HISTORY_ORDERS[order_by]
    after = read_token(page_token, keyset)
    with db.read() as session:
        repo = AdminRepository(session)
        got = repo.history(flt, order_by=order_by, after=after, limit=page_size)
        measurements = repo.measurements([r.trial.id for r in got.rows])
        items = [
            AdminTrial(
                to_trial(r.trial, measurements[r.trial.id]), r.tenant, r.study_name, r.family
            )
            for r in got.rows
        ]
    return Page(items, next_token(keyset, got.next_key))


def chart_trials(
    db: Database, principal: Principal, study_id: str, *, limit: int = 5000
) -> list[Trial]:
    """The first ``limit`` trials of a visible study, by number, without measurements.

    The dashboard plots these; the cap keeps a page of a huge study cheap to render.
    """
    with db.read() as session:
        study = visible_study(session, principal, study_id)
        rows = AdminRepository(session).study_trials(study.id, limit)
        return [to_trial(r) for r in rows]
