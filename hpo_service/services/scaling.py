"""Extrapolation of a study's per-module hyperparameters to a target model shape."""

from __future__ import annotations

from typing import Any

from hpo_service.db.database import Database
from hpo_service.db.mapping import study_config, to_trial
from hpo_service.db.repositories import TrialRepository
from hpo_service.domain import Principal, TrialState
from hpo_service.engine.pareto import best_trial
from hpo_service.errors import ConflictError, InvalidInputError, TrialNotFoundError
from hpo_service.scaling.extrapolate import ExtrapolationResult, extrapolate
from hpo_service.services.access import visible_study, visible_trial

__all__ = ["extrapolate_trial"]


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
