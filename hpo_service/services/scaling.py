"""Extrapolation of a study's per-module hyperparameters to a target model shape."""

from __future__ import annotations

from typing import Any

from hpo_service.db.database import Database
from hpo_service.db.mapping import study_config, to_trial
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.domain import Principal, TrialState
from hpo_service.engine.pareto import best_trial
from hpo_service.errors import ConflictError, InvalidInputError, TrialNotFoundError
from hpo_service.scaling.extrapolate import ExtrapolationResult, extrapolate
from hpo_service.scaling.ladder import LadderReport, LadderStudy, LadderTrial, ladder_diagnostics
from hpo_service.services.access import visible_study, visible_trial

__all__ = ["extrapolate_trial", "family_ladder"]


def extrapolate_trial(
    db: Database,
    principal: Principal,
    study_id: str,
    *,
    target: dict[str, Any],
    trial_id: str | None = None,
) -> ExtrapolationResult:
    """The values to use at ``target`` for a trial of the study (default: its best).

    Raises:
        InvalidInputError: the study has no ``scale`` configuration, or the target is bad.
        ConflictError: no trial has completed yet (and none was named).
        TrialNotFoundError: ``trial_id`` is not a trial of this study.
    """
    with db.read() as session:
        study = visible_study(session, principal, study_id)
        config = study_config(study)
        if config.scale is None:
            raise InvalidInputError.at(
                ("body",), "this study has no 'scale' configuration to extrapolate with"
            )
        if trial_id is not None:
            row, owner = visible_trial(session, principal, trial_id)
            if owner.id != study.id:
                raise TrialNotFoundError(trial_id)
            params = dict(row.params)
        else:
            rows = TrialRepository(session).completed_by_value(study.id, config.objective.goal)
            best = best_trial([to_trial(r) for r in rows], config.objective, config.constraints)
            if best is None or best.state is not TrialState.COMPLETED:
                raise ConflictError("no completed trial yet; name one with 'trial_id'")
            params = dict(best.params)
    return extrapolate(params, config.scale, target, params_loc=("trial", "params"))


def family_ladder(
    db: Database,
    principal: Principal,
    family: str,
    *,
    axis: str | None = None,
    target: dict[str, Any] | None = None,
) -> LadderReport:
    """Does each hyperparameter's optimum drift across the family's proxy scales?

    Uses every visible study of ``family`` that has a ``scale`` configuration and its
    completed trials; studies without scale are ignored (they have no shape to fit).
    """
    with db.read() as session:
        tenant = None if principal.is_admin else principal.tenant
        rows = StudyRepository(session).in_family(family, tenant=tenant)
        repo = TrialRepository(session)
        ladder: list[LadderStudy] = []
        for row in rows:
            config = study_config(row)
            if config.scale is None:
                continue
            completed = repo.completed_by_value(row.id, config.objective.goal)
            ladder.append(
                LadderStudy(
                    study_id=row.id,
                    scale=config.scale,
                    trials=[LadderTrial(params=dict(t.params), value=t.value) for t in completed],
                    goal=config.objective.goal,
                )
            )
    return ladder_diagnostics(ladder, axis=axis, target=target)
