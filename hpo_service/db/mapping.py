"""Row ⇄ domain conversions: the only code that knows both representations."""

from __future__ import annotations

from typing import Any

from hpo_service.db.models import MeasurementRow, StudyRow, TrialRow
from hpo_service.domain import (
    FittedTransfer,
    Measurement,
    Objective,
    OutcomeConstraint,
    ScaleConfig,
    SearchSpace,
    StoppingSpec,
    Study,
    StudyConfig,
    StudyState,
    TransferSpec,
    Trial,
    TrialState,
)

__all__ = [
    "effective_space_json",
    "study_config",
    "to_measurement",
    "to_study",
    "to_trial",
    "transfer_json",
]


def study_config(row: StudyRow) -> StudyConfig:
    """The designer-facing configuration stored on a study row.

    The ``transfer`` column holds the user's spec with the service's record under
    ``"fitted"``; they are read apart here, the only place that knows the layout.
    """
    spec, fitted = _transfer(row.transfer)
    return StudyConfig(
        space=SearchSpace.model_validate(row.space),
        objective=Objective.model_validate(row.objective),
        algorithm=row.algorithm,
        seed=row.seed,
        transfer=spec,
        scale=ScaleConfig.model_validate(row.scale) if row.scale else None,
        objectives=tuple(Objective.model_validate(o) for o in row.objectives or ()),
        constraints=tuple(OutcomeConstraint.model_validate(c) for c in row.constraints or ()),
        stopping=StoppingSpec.model_validate(row.stopping) if row.stopping else None,
        fitted_transfer=fitted,
    )


def transfer_json(spec: TransferSpec, fitted: FittedTransfer | None) -> dict[str, Any]:
    """What a study row's ``transfer`` column holds: the spec, the record under ``fitted``."""
    out = spec.to_json()
    if fitted is not None:
        out["fitted"] = fitted.to_json()
    return out


def effective_space_json(fitted: FittedTransfer) -> dict[str, Any]:
    """What a study row's ``effective_space`` column holds: the record without the prior.

    The column is the queryable copy of what the study shows; the source prior's rows
    (tens of KB, read only by the designer) stay in ``transfer``.
    """
    return {k: v for k, v in fitted.to_json().items() if k != "prior"}


def _transfer(
    stored: dict[str, Any] | None,
) -> tuple[TransferSpec | None, FittedTransfer | None]:
    if not stored:
        return None, None
    spec = TransferSpec.model_validate({k: v for k, v in stored.items() if k != "fitted"})
    fitted = stored.get("fitted")
    return spec, FittedTransfer.from_json(fitted) if fitted else None


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
