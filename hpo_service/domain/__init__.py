"""The shared vocabulary: search spaces, trials, studies. Pure data, no heavy imports."""

from hpo_service.domain.principal import Principal, Role
from hpo_service.domain.space import (
    CategoricalParameter,
    Condition,
    FloatParameter,
    IntParameter,
    OrdinalParameter,
    Parameter,
    Params,
    ParamValue,
    SearchSpace,
)
from hpo_service.domain.study import (
    Goal,
    Objective,
    OutcomeConstraint,
    Study,
    StudyConfig,
    StudyState,
    better,
    objective_value,
)
from hpo_service.domain.trial import (
    FINISHED_STATES,
    LEASED_STATES,
    Measurement,
    Trial,
    TrialSource,
    TrialState,
    can_transition,
)

__all__ = [
    "FINISHED_STATES",
    "LEASED_STATES",
    "CategoricalParameter",
    "Condition",
    "FloatParameter",
    "Goal",
    "IntParameter",
    "Measurement",
    "Objective",
    "OrdinalParameter",
    "OutcomeConstraint",
    "ParamValue",
    "Parameter",
    "Params",
    "Principal",
    "Role",
    "SearchSpace",
    "Study",
    "StudyConfig",
    "StudyState",
    "Trial",
    "TrialSource",
    "TrialState",
    "better",
    "can_transition",
    "objective_value",
]
