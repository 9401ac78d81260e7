"""Queries on studies. Repositories flush, never commit: services own transactions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from hpo_service.db.keyset import Key, Keyset, KeysetSlice
from hpo_service.db.models import StudyRow, TrialRow
from hpo_service.db.repositories.trials import TrialRepository

__all__ = ["STUDIES_BY_CREATION", "StudyRepository"]

# Oldest first; ``ix_studies_tenant_created`` serves it within a tenant.
STUDIES_BY_CREATION = Keyset("studies", StudyRow.created_at, StudyRow.id)


class StudyRepository:
    """Every query on the ``studies`` table."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: StudyRow) -> StudyRow:
        """Insert a new study."""
        self.session.add(row)
        self.session.flush()
        return row

    def get(
        self, study_id: str, *, tenant: str | None = None, lock: bool = False
    ) -> StudyRow | None:
        """One study, optionally only if it belongs to ``tenant``; ``lock`` takes a row lock.

        The row lock (PostgreSQL ``FOR UPDATE``) serialises every change to one study's
        trial set, e.g. numbering and leasing, across server processes.
        """
        stmt = select(StudyRow).where(StudyRow.id == study_id)
        if tenant is not None:
            stmt = stmt.where(StudyRow.tenant == tenant)
        if lock:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def lock_of_trial(self, trial_id: str) -> StudyRow | None:
        """Lock the study a trial belongs to (None when the trial does not exist).

        Whoever changes a trial and then its study takes the study's lock first, the
        order suggestion requests use, so the two never wait for each other in a cycle.
        """
        owner = select(TrialRow.study_id).where(TrialRow.id == trial_id).scalar_subquery()
        stmt = select(StudyRow).where(StudyRow.id == owner).with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def lock_reclaimable(self, now: datetime) -> Sequence[StudyRow]:
        """Lock the studies holding expired leases, skipping those another transaction holds.

        A skipped study is busy: a suggestion request reclaims its leases itself, and
        otherwise the next housekeeping round does.
        """
        stmt = (
            select(StudyRow)
            .where(StudyRow.id.in_(TrialRepository.reclaimable_study_ids(now)))
            .order_by(StudyRow.id)
            .with_for_update(skip_locked=True)
        )
        return self.session.scalars(stmt).all()

    def page(
        self,
        *,
        tenant: str | None,
        family: str | None,
        state: str | None,
        name: str | None,
        after: Key | None,
        limit: int,
    ) -> KeysetSlice[StudyRow]:
        """Up to ``limit`` studies in creation order after the key ``after``."""
        stmt: Select[StudyRow] = select(StudyRow)
        if tenant is not None:
            stmt = stmt.where(StudyRow.tenant == tenant)
        if family is not None:
            stmt = stmt.where(StudyRow.family == family)
        if state is not None:
            stmt = stmt.where(StudyRow.state == state)
        if name is not None:
            stmt = stmt.where(StudyRow.name == name)
        return STUDIES_BY_CREATION.fetch_scalars(self.session, stmt, after=after, limit=limit)

    def in_family(self, family: str, *, tenant: str | None) -> Sequence[StudyRow]:
        """Every study of a family (of one tenant unless None), oldest first."""
        stmt = select(StudyRow).where(StudyRow.family == family)
        if tenant is not None:
            stmt = stmt.where(StudyRow.tenant == tenant)
        return self.session.scalars(stmt.order_by(StudyRow.created_at, StudyRow.id)).all()

    def trial_counts(self, study_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Trials per state for each study, in one grouped query."""
        out: dict[str, dict[str, int]] = {sid: {} for sid in study_ids}
        if not study_ids:
            return out
        stmt = (
            select(TrialRow.study_id, TrialRow.state, func.count())
            .where(TrialRow.study_id.in_(study_ids))
            .group_by(TrialRow.study_id, TrialRow.state)
        )
        for study_id, state, count in self.session.execute(stmt):
            out[study_id][state] = count
        return out

    def delete(self, row: StudyRow) -> None:
        """Delete a study; its trials and measurements go with it (ON DELETE CASCADE)."""
        self.session.delete(row)
        self.session.flush()
