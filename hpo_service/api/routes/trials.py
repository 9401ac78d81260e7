"""Trial routes: leasing, worker reports, user trials and reads."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from hpo_service.api.deps import ClientDep, DatabaseDep, NowDep, PrincipalDep, WorkerCallDep
from hpo_service.api.schemas.common import Page
from hpo_service.api.schemas.trials import (
    CompleteRequest,
    FailRequest,
    HeartbeatRead,
    HeartbeatRequest,
    InfeasibleRequest,
    MeasurementRequest,
    ShouldStopRead,
    SuggestionsRead,
    SuggestionsRequest,
    TrialBatchCreate,
    TrialBatchRead,
    TrialCreate,
    TrialRead,
)
from hpo_service.services import suggestions, trials

router = APIRouter(tags=["trials"])

PageSize = Annotated[int, Query(ge=1, le=1000)]


def _json(model: BaseModel) -> Response:
    """A ready response for the hot worker endpoints (heartbeat, measurements).

    FastAPI validates and re-serialises a handler's return value against its
    ``response_model``; for these tiny answers, built from already-typed values, that
    was a tenth of the server's CPU per request. The declared ``response_model`` still
    documents the body in OpenAPI.
    """
    return Response(model.model_dump_json(), media_type="application/json")


# Worker routes first: routes are matched in file order and these carry the traffic.
@router.post("/v1/trials/{trial_id}/heartbeat", response_model=HeartbeatRead)
def heartbeat(trial_id: str, body: HeartbeatRequest, call: WorkerCallDep) -> Response:
    """Extend the lease; tells the worker whether to stop early."""
    result = trials.heartbeat(
        call.db,
        call.principal,
        trial_id,
        worker_id=body.worker_id,
        now=call.now,
        lease_seconds=call.settings.lease_seconds,
    )
    return _json(
        HeartbeatRead(lease_expires_at=result.lease_expires_at, should_stop=result.should_stop)
    )


@router.post("/v1/trials/{trial_id}/measurements", response_model=ShouldStopRead)
def report(trial_id: str, body: MeasurementRequest, call: WorkerCallDep) -> Response:
    """Store an intermediate measurement (extends the lease)."""
    should_stop = trials.report_measurement(
        call.db,
        call.principal,
        trial_id,
        worker_id=body.worker_id,
        step=body.step,
        metrics=body.metrics,
        elapsed_s=body.elapsed_s,
        now=call.now,
        lease_seconds=call.settings.lease_seconds,
    )
    return _json(ShouldStopRead(should_stop=should_stop))


@router.post("/v1/trials/{trial_id}/complete", response_model=TrialRead)
def complete(trial_id: str, body: CompleteRequest, call: WorkerCallDep) -> TrialRead:
    """Finish the trial with its final metrics; the same request again is a no-op."""
    trial = trials.complete_trial(
        call.db,
        call.principal,
        trial_id,
        worker_id=body.worker_id,
        metrics=body.metrics,
        cost=body.cost,
        now=call.now,
    )
    return TrialRead.of(trial)


@router.post("/v1/trials/{trial_id}/fail", response_model=TrialRead)
def fail(trial_id: str, body: FailRequest, call: WorkerCallDep) -> TrialRead:
    """Record a failure; with ``retry`` the trial is queued again while attempts remain."""
    trial = trials.fail_trial(
        call.db,
        call.principal,
        trial_id,
        worker_id=body.worker_id,
        error=body.error,
        retry=body.retry,
        now=call.now,
    )
    return TrialRead.of(trial)


@router.post("/v1/trials/{trial_id}/infeasible", response_model=TrialRead)
def infeasible(trial_id: str, body: InfeasibleRequest, call: WorkerCallDep) -> TrialRead:
    """Record that the point cannot be evaluated."""
    trial = trials.mark_infeasible(
        call.db,
        call.principal,
        trial_id,
        worker_id=body.worker_id,
        reason=body.reason,
        now=call.now,
    )
    return TrialRead.of(trial)


@router.post("/v1/studies/{study_id}/suggestions", response_model=SuggestionsRead)
def suggest(study_id: str, body: SuggestionsRequest, call: WorkerCallDep) -> SuggestionsRead:
    """Lease up to ``count`` trials to the worker (own, then queued, then new)."""
    result = suggestions.request_suggestions(
        call.db,
        call.principal,
        study_id,
        worker_id=body.worker_id,
        count=body.count,
        now=call.now,
        lease_seconds=call.settings.lease_seconds,
        deadline_s=call.settings.suggestion_deadline_seconds,
    )
    return SuggestionsRead(
        trials=[TrialRead.of(t) for t in result.trials], study_state=result.study_state.value
    )


def _to_new(body: TrialCreate) -> trials.NewTrial:
    return trials.NewTrial(
        params=body.params,
        metrics=body.result.metrics if body.result is not None else None,
        metadata=body.metadata,
    )


@router.post(
    "/v1/studies/{study_id}/trials", status_code=status.HTTP_201_CREATED, response_model=TrialRead
)
def add_trial(
    study_id: str, body: TrialCreate, db: DatabaseDep, principal: ClientDep, now: NowDep
) -> TrialRead:
    """Queue a user-chosen point, or import a finished trial when ``result`` is given."""
    return TrialRead.of(trials.add_trials(db, principal, study_id, [_to_new(body)], now=now)[0])


@router.post(
    "/v1/studies/{study_id}/trials:batch",
    status_code=status.HTTP_201_CREATED,
    response_model=TrialBatchRead,
)
def add_trials(
    study_id: str, body: TrialBatchCreate, db: DatabaseDep, principal: ClientDep, now: NowDep
) -> TrialBatchRead:
    """Queue or import several trials, all or nothing."""
    created = trials.add_trials(db, principal, study_id, [_to_new(t) for t in body.trials], now=now)
    return TrialBatchRead(trials=[TrialRead.of(t) for t in created])


@router.get("/v1/studies/{study_id}/trials", response_model=Page[TrialRead])
def list_trials(
    study_id: str,
    db: DatabaseDep,
    principal: PrincipalDep,
    state: Literal["requested", "active", "stopping", "completed", "failed", "infeasible"]
    | None = None,
    worker_id: str | None = None,
    order_by: Literal["number", "value"] = "number",
    page_size: PageSize = 50,
    page_token: str | None = None,
) -> Page[TrialRead]:
    """A study's trials, by number or best value first."""
    page = trials.list_trials(
        db,
        principal,
        study_id,
        state=state,
        worker_id=worker_id,
        order_by=order_by,
        page_size=page_size,
        page_token=page_token,
    )
    return Page[TrialRead](
        items=[TrialRead.of(t) for t in page.items], next_page_token=page.next_page_token
    )


@router.get("/v1/trials/{trial_id}", response_model=TrialRead)
def get_trial(trial_id: str, db: DatabaseDep, principal: PrincipalDep) -> TrialRead:
    """One trial with its measurements."""
    return TrialRead.of(trials.get_trial(db, principal, trial_id))
