"""The typed Python SDK of the service: ``HPOClient`` over httpx, its models and errors.

``HPOClient.studies`` and ``HPOClient.trials`` answer with the models re-exported here;
the client's own methods answer with plain JSON (see ``hpo_service.client.client``).
"""

from hpo_service.client.client import HPOClient
from hpo_service.client.errors import ProblemError
from hpo_service.client.models import (
    Condition,
    Constraint,
    ExtrapolationResult,
    ExtrapolationRule,
    HeartbeatReply,
    Measurement,
    MeasurementReply,
    Objective,
    Page,
    Parameter,
    ParamValue,
    SearchSpace,
    Study,
    StudyPage,
    SuggestionBatch,
    Trial,
    TrialPage,
    TrialResult,
)
from hpo_service.client.resources import Studies, Trials

__all__ = [
    "Condition",
    "Constraint",
    "ExtrapolationResult",
    "ExtrapolationRule",
    "HPOClient",
    "HeartbeatReply",
    "Measurement",
    "MeasurementReply",
    "Objective",
    "Page",
    "ParamValue",
    "Parameter",
    "ProblemError",
    "SearchSpace",
    "Studies",
    "Study",
    "StudyPage",
    "SuggestionBatch",
    "Trial",
    "TrialPage",
    "TrialResult",
    "Trials",
]
