"""Study use cases: create, read, list, update, delete, best trials, completion.

Each public function is one transaction: it opens it, and a raised error rolls it back,
so a rejected request changes nothing. ``complete_if_done`` is the exception: it joins
the transaction of whatever may have spent a study's budget (a trial finishing, a lease
reclaim, a PATCH).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.ids import new_id
from hpo_service.db.mapping import (
    effective_space_json,
    study_config,
    to_study,
    to_trial,
    transfer_json,
)
from hpo_service.db.models import StudyRow
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.db.repositories.studies import STUDIES_BY_CREATION
from hpo_service.db.repositories.trials import set_state
from hpo_service.domain import (
    Objective,
    OutcomeConstraint,
    Principal,
    Role,
    SearchSpace,
    StoppingSpec,
    Study,
    StudyState,
    Trial,
    TrialState,
    budget_spent,
    has_room,
    study_transition,
)
from hpo_service.engine import registry
from hpo_service.engine.pareto import best_trials as rank_best
from hpo_service.engine.stopping import parse_stopping
from hpo_service.errors import InvalidInputError
from hpo_service.scaling.config import validate_scale
from hpo_service.services import audit, transfer
from hpo_service.services.access import require_role, visible_study
from hpo_service.services.pagination import Page, next_token, read_token

__all__ = [
    "NewStudy",
    "StudyChanges",
    "best_trials",
    "complete_if_done",
    "create_study",
    "delete_study",
    "get_study",
    "list_studies",
    "update_study",
]


@dataclass(frozen=True)
class NewStudy:
    """What a client asks for when creating a study.

    The typed fields are already schema-validated; ``stopping``, ``transfer`` and
    ``scale`` are the request's JSON objects, checked once by ``create_study`` (which
    also serves benchmarks and tools that pass options the API's schema does not have)
    and carried typed from there on.
    """

    name: str
    objective: Objective
    space: SearchSpace
    family: str | None = None
    algorithm: str | None = None
    objectives: tuple[Objective, ...] = ()
    constraints: tuple[OutcomeConstraint, ...] = ()
    stopping: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None
    scale: dict[str, Any] | None = None
    max_trials: int | None = None
    max_attempts: int | None = None
    seed: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyChanges:
    """A PATCH: only the fields that were sent are applied."""

    state: StudyState | None = None
    metadata: dict[str, Any] | None = None
    max_trials: int | None = None
    max_trials_set: bool = False


def _check_supported(new: NewStudy) -> StoppingSpec | None:
    """Refuse capabilities this build lacks, with a 422 naming the field.

    Returns:
        the study's early-stopping spec, checked.
    """
    metrics = [o.metric for o in new.objectives]
    if len(set(metrics)) != len(metrics):
        raise InvalidInputError.at(("body", "objectives"), "objective metrics must be distinct")
    for i, c in enumerate(new.constraints):
        if c.metric in metrics or c.metric == new.objective.metric:
            raise InvalidInputError.at(
                ("body", "constraints", i, "metric"),
                f"{c.metric!r} is an objective; constraints bound other metrics",
            )
    return parse_stopping(new.stopping)


def create_study(
    db: Database, principal: Principal, new: NewStudy, *, default_max_attempts: int
) -> Study:
    """Store a new study owned by the caller's tenant.

    Raises:
        PermissionDeniedError: for worker keys.
        UnknownAlgorithmError: when ``algorithm`` names no designer.
        InvalidInputError: a bad transfer spec or unusable named source studies.
    """
    require_role(principal, Role.CLIENT)
    algorithm = registry.check_algorithm(new.algorithm or registry.default_algorithm())
    stopping = _check_supported(new)
    scale = validate_scale(new.scale, param_names=new.space.names, new_study=True)
    spec = transfer.parse_transfer(new.transfer)
    objectives = new.objectives
    objective = objectives[0] if objectives else new.objective
    row = StudyRow(
        id=new_id("st"),
        tenant=principal.tenant,
        name=new.name,
        family=new.family,
        objective=objective.model_dump(),
        objectives=[o.model_dump() for o in objectives] or None,
        constraints=[c.model_dump() for c in new.constraints] or None,
        stopping=stopping.to_json() if stopping is not None else None,
        space=new.space.model_dump(mode="json", exclude_none=True),
        algorithm=algorithm,
        transfer=transfer_json(spec, None) if spec is not None else None,
        scale=scale.to_json() if scale is not None else None,
        max_trials=new.max_trials,
        max_attempts=new.max_attempts or default_max_attempts,
        seed=new.seed,
        meta=dict(new.metadata),
        state=StudyState.ACTIVE.value,
        next_number=0,
    )
    with db.write() as session:
        if spec is not None:
            fitted = transfer.fit_in_session(
                session,
                tenant=principal.tenant,
                family=new.family,
                space=new.space,
                spec=spec,
                now=utcnow(),
            )
            if fitted is not None:
                row.transfer = transfer_json(spec, fitted)
                row.effective_space = effective_space_json(fitted)
        StudyRepository(session).add(row)
        return to_study(row)


def get_study(db: Database, principal: Principal, study_id: str) -> Study:
    """One study with its trial counts."""
    with db.read() as session:
        row = visible_study(session, principal, study_id)
        counts = StudyRepository(session).trial_counts([row.id])
        return to_study(row, counts[row.id])


def list_studies(
    db: Database,
    principal: Principal,
    *,
    family: str | None = None,
    state: str | None = None,
    name: str | None = None,
    page_size: int = 50,
    page_token: str | None = None,
) -> Page[Study]:
    """The caller's studies (every tenant's for admins) in creation order."""
    after = read_token(page_token, STUDIES_BY_CREATION)
    with db.read() as session:
        repo = StudyRepository(session)
        got = repo.page(
            tenant=None if principal.is_admin else principal.tenant,
            family=family,
            state=state,
            name=name,
            after=after,
            limit=page_size,
        )
        counts = repo.trial_counts([r.id for r in got.rows])
        items = [to_study(r, counts[r.id]) for r in got.rows]
    return Page(items, next_token(STUDIES_BY_CREATION, got.next_key))


def update_study(db: Database, principal: Principal, study_id: str, changes: StudyChanges) -> Study:
    """Change a study's state, metadata or trial budget.

    The state follows ``study_transition``: ``active`` ⇄ ``paused``, either →
    ``completed``, and ``completed`` → ``active`` only together with a ``max_trials``
    that leaves room for new trials. Completing a study asks its running trials to stop
    (``active`` → ``stopping``, seen by their workers at the next heartbeat), since nobody
    wants the result any more; queued trials stay queued for a reopening. A new budget
    that is already spent, with nothing unfinished, completes the study at once.

    Raises:
        PermissionDeniedError: for worker keys.
        InvalidTransitionError: a move the study's state machine forbids (409); nothing
            is changed.
    """
    require_role(principal, Role.CLIENT)
    with db.write() as session:
        row = visible_study(session, principal, study_id, lock=True)
        trials = TrialRepository(session)
        if changes.state is not None:
            current = StudyState(row.state)
            new_budget = (
                current is StudyState.COMPLETED
                and changes.max_trials_set
                and has_room(changes.max_trials, trials.count_engine_created(row.id))
            )
            target = study_transition(current, changes.state, new_budget=new_budget)
            if target is StudyState.COMPLETED and current is not StudyState.COMPLETED:
                _stop_running(trials, row.id, "the study was completed")
            row.state = target.value
        if changes.metadata is not None:
            row.meta = dict(changes.metadata)
        if changes.max_trials_set:
            row.max_trials = changes.max_trials
        complete_if_done(trials, row)
        session.flush()
        counts = StudyRepository(session).trial_counts([row.id])
        return to_study(row, counts[row.id])


def _stop_running(trials: TrialRepository, study_id: str, reason: str) -> None:
    """Ask every running trial of the study to stop early; each finishes with what it has."""
    for trial in trials.movable_to(study_id, TrialState.STOPPING):
        set_state(trial, TrialState.STOPPING)
        trial.meta = {**(trial.meta or {}), "stopped_early": reason}


def complete_if_done(trials: TrialRepository, study: StudyRow) -> bool:
    """Complete ``study`` if its budget is spent and no trial is unfinished; True if so.

    Called, with the study row locked, in the transaction of every change that can
    make it so: a trial finishing (complete, fail, infeasible, a reclaim giving up), or a
    PATCH of ``max_trials``. Under the lock, the count sees every finish committed
    before, so of two last trials finishing at once the second one completes the study.
    """
    state = StudyState(study.state)
    if state is StudyState.COMPLETED or study.max_trials is None:
        return False
    if trials.pending_exists(study.id):  # the usual answer while a study runs: one probe
        return False
    created = trials.count_engine_created(study.id)
    if not budget_spent(study.max_trials, created, any_pending=False):
        return False
    study.state = study_transition(state, StudyState.COMPLETED).value
    return True


def delete_study(db: Database, principal: Principal, study_id: str) -> None:
    """Delete a study and all its trials (admins only)."""
    require_role(principal, Role.ADMIN)
    with db.write() as session:
        row = visible_study(session, principal, study_id, lock=True)
        StudyRepository(session).delete(row)
        audit.record(
            session,
            principal,
            "study.delete",
            now=utcnow(),
            target=study_id,
            detail={"name": row.name, "tenant": row.tenant},
        )


def best_trials(db: Database, principal: Principal, study_id: str) -> list[Trial]:
    """The best feasible completed trial, or the Pareto set of a multi-objective study.

    Empty when nothing (feasible) has completed yet. A single objective without
    constraints is answered from the ``(study, value)`` index.
    """
    with db.read() as session:
        row = visible_study(session, principal, study_id)
        config = study_config(row)
        repo = TrialRepository(session)
        completed = repo.completed_by_value(row.id, config.objective.goal)
        if len(config.all_objectives) == 1 and not config.constraints:
            chosen = list(completed[:1])
        else:
            by_id = {t.id: t for t in completed}
            chosen = [by_id[t.id] for t in rank_best([to_trial(t) for t in completed], config)]
        measurements = repo.measurements([t.id for t in chosen])
        return [to_trial(t, measurements[t.id]) for t in chosen]
