"""Extrapolation of a study's per-module hyperparameters to a target model shape."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hpo_service.db.database import Database
from hpo_service.db.mapping import study_config, to_trial
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.domain import Principal, ScaleConfig, TrialState
from hpo_service.engine.pareto import best_trial
from hpo_service.errors import ConflictError, InvalidInputError, TrialNotFoundError
from hpo_service.scaling.extrapolate import ExtrapolationResult, extrapolate
from hpo_service.scaling.ladder import LadderReport, LadderStudy, LadderTrial, ladder_diagnostics
from hpo_service.scaling.ladder_correction import extrapolate_with_ladder
from hpo_service.services.access import visible_study, visible_trial

__all__ = ["extrapolate_trial", "family_ladder"]


def extrapolate_trial(
    db: Database,
    principal: Principal,
    study_id: str,
    *,
    target: dict[str, Any],
    trial_id: str | None = None,
    use_ladder: bool | None = None,
) -> ExtrapolationResult:
    """The values to use at ``target`` for a trial of the study (default: its best).

    ``use_ladder`` applies the family ladder (``scaling/ladder_correction.py``): fitted
    drifts on top of the rules, and per-role values only where the ladder says they
    transfer, the rest kept at the global values of the study this one refined
    (``metadata.parent_study`` / ``refined_from_trial``). ``None`` (the default) uses it
    whenever the study's family holds studies at more than one proxy shape, because
    that is when there is something measured to correct the rules with.

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
        family = study.family
        parent_params = _refined_from(session, principal, dict(study.meta or {}))
        if use_ladder is None:
            use_ladder = family is not None and _proxy_shapes(session, principal, family) > 1
    if not use_ladder or family is None:
        return _plain(params, config.scale, target, use_ladder, family)
    report = family_ladder(db, principal, family, target=target or None)
    return extrapolate_with_ladder(
        params,
        config.scale,
        target,
        report,
        parent_params=parent_params,
        params_loc=("trial", "params"),
    )


def _plain(
    params: dict[str, Any],
    scale: ScaleConfig,
    target: dict[str, Any],
    use_ladder: bool | None,
    family: str | None,
) -> ExtrapolationResult:
    result = extrapolate(params, scale, target, params_loc=("trial", "params"))
    if use_ladder and family is None:
        note = "use_ladder: the study has no family, so there is no ladder; plain rules used"
        return result.model_copy(update={"warnings": [*result.warnings, note]})
    return result


def _proxy_shapes(session: Session, principal: Principal, family: str) -> int:
    """How many distinct proxy shapes the family's visible scaled studies use."""
    tenant = None if principal.is_admin else principal.tenant
    rows = StudyRepository(session).in_family(family, tenant=tenant)
    return len({ScaleConfig.model_validate(r.scale).proxy for r in rows if r.scale})


def _refined_from(
    session: Session, principal: Principal, metadata: dict[str, Any]
) -> dict[str, Any] | None:
    """The parameters of the parent trial a per-module study refined, if it names one."""
    trial_id = metadata.get("refined_from_trial")
    if not isinstance(trial_id, str):
        return None
    try:
        row, _owner = visible_trial(session, principal, trial_id)
    except TrialNotFoundError:
        return None
    return dict(row.params)


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
