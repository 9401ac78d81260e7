"""Optuna history as service data: the study body, finished trials as observations.

The sampler uses these when it creates a service study (the Optuna trials finished so
far seed it) and when a trial ran at values other than the ones it was handed;
``import_optuna_study`` (``hpo import --from-optuna``) uses them to turn a whole Optuna
study into a service study, e.g. as a transfer source for a family.

An observation is a finished Optuna trial with a finite value for every objective:
``COMPLETE``, or ``PRUNED`` with the last intermediate value Optuna stored as its value.
Failed trials carry no value, and the service takes imported trials only as completed
ones, so they are left out.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from hpo_service.client.backoff import Backoff, retry_call
from hpo_service.client.client import HPOClient
from hpo_service.integrations.optuna._space import SpaceCodec, objectives_spec, same_value

__all__ = [
    "ImportReport",
    "import_optuna_study",
    "merged_distributions",
    "metric_names",
    "observation",
    "study_body",
]

JSON = dict[str, Any]
T = TypeVar("T")
BATCH = 500
"""Trials per ``trials:batch`` request: far below the body limit, few round trips."""


def metric_names(study: optuna.Study) -> list[str]:
    """The service metric of each objective, in Optuna's order."""
    return [o["metric"] for o in objectives_spec(study.directions, study.metric_names)]


def study_body(
    study: optuna.Study,
    codec: SpaceCodec,
    *,
    name: str | None = None,
    family: str | None = None,
    algorithm: str | None = None,
    seed: int | None = None,
) -> JSON:
    """The ``POST /v1/studies`` body for an Optuna study over ``codec``'s space.

    The body depends only on its arguments (no clock, no randomness), so several
    processes asking for the same study send the same bytes and one Idempotency-Key
    gives them all the same service study.
    """
    objectives = objectives_spec(study.directions, study.metric_names)
    body: JSON = {
        "name": (name or f"optuna:{study.study_name}")[:256],
        "objective": objectives[0],
        "space": codec.space(),
        "metadata": {
            "optuna": {
                "study_name": study.study_name,
                "directions": [d.name.lower() for d in study.directions],
                "distributions": codec.distributions_json(),
            }
        },
    }
    if len(objectives) > 1:
        body["objectives"] = objectives
    optional = {"family": family, "algorithm": algorithm, "seed": seed}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def observation(
    trial: FrozenTrial,
    codec: SpaceCodec,
    metrics: Sequence[str],
    *,
    state: TrialState | None = None,
    values: Sequence[float] | None = None,
) -> JSON | None:
    """A finished trial as a ``POST /v1/studies/{id}/trials`` body; None if it is not one.

    None when the trial has no finite value for every objective, or a parameter of the
    space is missing from it or lies outside the space's distribution.

    Args:
        trial: the trial (its number and parameters).
        codec: the service study's space.
        metrics: the service metric of each objective.
        state: the final state when ``trial`` predates it (``after_trial``'s argument).
        values: the final values, likewise.
    """
    state = state or trial.state
    values = values if values is not None else trial.values
    if state not in (TrialState.COMPLETE, TrialState.PRUNED) or values is None:
        return None
    if len(values) != len(metrics) or not all(math.isfinite(v) for v in values):
        return None
    params = codec.encode(trial.params)
    if params is None:
        return None
    return {
        "params": params,
        "result": {"metrics": dict(zip(metrics, values, strict=True))},
        "metadata": {"optuna_trial": trial.number, "optuna_state": state.name},
    }


def _widen(a: BaseDistribution, b: BaseDistribution) -> BaseDistribution | None:
    """One distribution covering both, or None when they cannot be one parameter."""
    if isinstance(a, CategoricalDistribution) and isinstance(b, CategoricalDistribution):
        extra = [c for c in b.choices if not any(same_value(c, x) for x in a.choices)]
        return CategoricalDistribution([*a.choices, *extra])
    same_kind = type(a) is type(b) and isinstance(a, FloatDistribution | IntDistribution)
    if not same_kind:
        return None
    assert isinstance(a, FloatDistribution | IntDistribution)
    assert isinstance(b, FloatDistribution | IntDistribution)
    if a.log != b.log or a.step != b.step:
        return None
    low, high = min(a.low, b.low), max(a.high, b.high)
    if a.step is not None:
        offset = (b.low - a.low) / a.step
        if abs(offset - round(offset)) > 1e-8:
            return None  # two grids that do not line up
    if isinstance(a, IntDistribution):
        return IntDistribution(int(low), int(high), log=a.log, step=int(a.step))
    return FloatDistribution(low, high, log=a.log, step=a.step)


def merged_distributions(
    trials: Iterable[FrozenTrial],
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The space that holds every given trial: the parameters all of them have.

    A parameter's ranges over the trials are widened into one (an Optuna study whose
    ranges changed between runs still imports whole); categorical choices are united.

    Returns:
        The distributions, and the parameters left out with the reason, for the user.
    """
    merged: dict[str, BaseDistribution] | None = None
    dropped: dict[str, str] = {}
    for trial in trials:
        if merged is None:
            merged = dict(trial.distributions)
            continue
        for name in list(merged):
            if name not in trial.distributions:
                dropped.setdefault(name, "absent from some trials (conditional)")
                del merged[name]
                continue
            wide = _widen(merged[name], trial.distributions[name])
            if wide is None:
                dropped.setdefault(name, "its distributions differ in kind, scale or step")
                del merged[name]
            else:
                merged[name] = wide
    return merged or {}, [f"{name}: {why}" for name, why in sorted(dropped.items())]


@dataclass
class ImportReport:
    """What ``import_optuna_study`` did.

    Attributes:
        study_id: the new service study.
        optuna_study: the Optuna study's name.
        imported: trials stored as completed user trials.
        skipped: trials of the Optuna study left out: failed, still running, pruned
            before any value, non-finite, or with a parameter outside the space.
        dropped_params: parameters left out of the space, each with the reason.
    """

    study_id: str
    optuna_study: str
    imported: int
    skipped: int
    dropped_params: list[str] = field(default_factory=list)


def _retrying(fn: Callable[[], T]) -> T:
    return retry_call(fn, Backoff(base=0.5, cap=5.0, deadline=120.0))


def _add_batch(client: HPOClient, study_id: str, bodies: list[JSON], key: str) -> None:
    """One all-or-nothing batch, retried under one key so a retry never adds it twice."""
    _retrying(lambda: client.add_trials(study_id, bodies, idempotency_key=key))


def import_optuna_study(
    client: HPOClient,
    storage: str | optuna.storages.BaseStorage,
    study_name: str | None = None,
    *,
    name: str | None = None,
    family: str | None = None,
    algorithm: str | None = None,
) -> ImportReport:
    """Create a service study holding an Optuna study's finished history.

    Args:
        client: a client with a ``client`` (or ``admin``) key of the target tenant.
        storage: the Optuna storage URL (``sqlite:///optuna.db``) or object.
        study_name: the Optuna study; may be omitted when the storage holds only one.
        name: the service study's name (default ``optuna:<study name>``).
        family: the service family, so later studies of it can transfer from this one.
        algorithm: the service study's algorithm, for continuing it as a service study.

    Raises:
        ValueError: no or several studies to choose from, or nothing to import.
        ProblemError: the service refused the study or the trials.
    """
    if study_name is None:
        names = optuna.get_all_study_names(storage)
        if len(names) != 1:
            raise ValueError(
                f"the storage holds {len(names)} studies ({', '.join(names) or 'none'}); "
                "name one with --study"
            )
        study_name = names[0]
    study = optuna.load_study(study_name=study_name, storage=storage)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    with_values = [t for t in finished if t.values is not None]
    distributions, dropped = merged_distributions(with_values)
    if not distributions:
        raise ValueError(f"Optuna study {study_name!r} has no finished trial with parameters")
    codec = SpaceCodec(distributions)
    metrics = metric_names(study)
    body = study_body(study, codec, name=name, family=family, algorithm=algorithm)
    key = f"optuna-import-{uuid.uuid4().hex}"
    created = _retrying(lambda: client.create_study(body, idempotency_key=key))
    bodies = [b for t in with_values if (b := observation(t, codec, metrics)) is not None]
    for start in range(0, len(bodies), BATCH):
        _add_batch(client, created["id"], bodies[start : start + BATCH], f"{key}-{start}")
    return ImportReport(
        study_id=str(created["id"]),
        optuna_study=study_name,
        imported=len(bodies),
        skipped=len(study.get_trials(deepcopy=False)) - len(bodies),
        dropped_params=dropped,
    )
