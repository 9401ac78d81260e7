"""Row ⇄ domain conversions: the only code that knows both representations."""

from __future__ import annotations

from hpo_service.db.models import MeasurementRow, StudyRow, TrialRow
from hpo_service.domain import (
    Measurement,
    Objective,
    OutcomeConstraint,
    SearchSpace,
    Study,
    StudyConfig,
    StudyState,
    Trial,
    TrialState,
)

__all__ = ["study_config", "to_measurement", "to_study", "to_trial"]


def study_config(row: StudyRow) -> StudyConfig:
    """The designer-facing configuration stored on a study row."""
    return StudyConfig(
        space=SearchSpace.model_validate(row.space),
        objective=Objective.model_validate(row.objective),
        algorithm=row.algorithm,
        seed=row.seed,
        transfer=row.transfer,
        scale=row.scale,
        objectives=tuple(Objective.model_validate(o) for o in row.objectives or ()),
        constraints=tuple(OutcomeConstraint.model_validate(c) for c in row.constraints or ()),
        stopping=row.stopping,
    )


def to_study(row: StudyRow, trial_counts: dict[str, int] | None = None) -> Study:
    """A domain study; ``trial_counts`` has every state, zero where none."""
    counts = {state.value: 0 for state in TrialState}
    counts.update(trial_counts or {})
    return Study(
        id=row.id,
        tenant=row.tenant,
        name=row.name,
        family=row.family,
        config=study_config(row),
        state=StudyState(row.state),
        max_trials=row.max_trials,
        max_attempts=row.max_attempts,
        metadata=dict(row.meta or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        trial_counts=counts,
    )


def to_measurement(row: MeasurementRow) -> Measurement:
    """A domain measurement."""
    return Measurement(step=row.step, metrics=dict(row.metrics), elapsed_s=row.elapsed_s, at=row.at)


def to_trial(row: TrialRow, measurements: list[MeasurementRow] | None = None) -> Trial:
    """A domain trial; measurements only when they were loaded."""
    return Trial(
        id=row.id,
        study_id=row.study_id,
        number=row.number,
        params=dict(row.params),
        state=TrialState(row.state),
        source=row.source,
        worker_id=row.worker_id,
        attempt=row.attempt,
        lease_expires_at=row.lease_expires_at,
        measurements=[to_measurement(m) for m in measurements or ()],
        result=dict(row.result["metrics"]) if row.result else None,
        cost=dict(row.cost) if row.cost is not None else None,
        metadata=dict(row.meta or {}),
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )
