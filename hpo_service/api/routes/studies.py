"""Study routes: validate the body, call one service function, shape the answer."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from hpo_service.api.deps import (
    AdminDep,
    ClientDep,
    DatabaseDep,
    NowDep,
    PrincipalDep,
    SettingsDep,
)
from hpo_service.api.schemas.common import Page
from hpo_service.api.schemas.studies import (
    ExtrapolateRequest,
    ExtrapolationRead,
    RefineRequest,
    RungsRead,
    RungsRequest,
    StudyCreate,
    StudyRead,
    StudyUpdate,
)
from hpo_service.api.schemas.trials import BestRead, TrialRead
from hpo_service.domain import StudyState
from hpo_service.services import ladder_rungs, refine, scaling, studies

router = APIRouter(prefix="/v1/studies", tags=["studies"])

PageSize = Annotated[int, Query(ge=1, le=1000)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StudyRead)
def create_study(
    body: StudyCreate, db: DatabaseDep, principal: ClientDep, settings: SettingsDep
) -> StudyRead:
    """Create a study in the caller's tenant."""
    new = studies.NewStudy(
        name=body.name,
        objective=body.objective,
        space=body.space,
        family=body.family,
        algorithm=body.algorithm,
        objectives=tuple(body.objectives or ()),
        constraints=tuple(body.constraints or ()),
        stopping=body.stopping,
        transfer=body.transfer.model_dump() if body.transfer is not None else None,
        scale=body.scale,
        max_trials=body.max_trials,
        max_attempts=body.max_attempts,
        seed=body.seed,
        metadata=body.metadata,
    )
    study = studies.create_study(db, principal, new, default_max_attempts=settings.max_attempts)
    return StudyRead.of(study)


@router.get("", response_model=Page[StudyRead])
def list_studies(
    db: DatabaseDep,
    principal: PrincipalDep,
    family: str | None = None,
    state: Literal["active", "paused", "completed"] | None = None,
    name: str | None = None,
    page_size: PageSize = 50,
    page_token: str | None = None,
) -> Page[StudyRead]:
    """The caller's studies in creation order."""
    page = studies.list_studies(
        db,
        principal,
        family=family,
        state=state,
        name=name,
        page_size=page_size,
        page_token=page_token,
    )
    return Page[StudyRead](
        items=[StudyRead.of(s) for s in page.items], next_page_token=page.next_page_token
    )


@router.get("/{study_id}", response_model=StudyRead)
def get_study(study_id: str, db: DatabaseDep, principal: PrincipalDep) -> StudyRead:
    """One study with its trial counts."""
    return StudyRead.of(studies.get_study(db, principal, study_id))


@router.patch("/{study_id}", response_model=StudyRead)
def update_study(
    study_id: str, body: StudyUpdate, db: DatabaseDep, principal: ClientDep
) -> StudyRead:
    """Change state, metadata or max_trials; fields not sent stay as they are."""
    changes = studies.StudyChanges(
        state=StudyState(body.state) if body.state is not None else None,
        metadata=body.metadata,
        max_trials=body.max_trials,
        max_trials_set="max_trials" in body.model_fields_set,
    )
    return StudyRead.of(studies.update_study(db, principal, study_id, changes))


@router.delete("/{study_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_study(study_id: str, db: DatabaseDep, principal: AdminDep) -> Response:
    """Delete a study with all its trials."""
    studies.delete_study(db, principal, study_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{study_id}/best", response_model=BestRead)
def best(study_id: str, db: DatabaseDep, principal: PrincipalDep) -> BestRead:
    """The best completed trial; an empty list before any trial completes."""
    return BestRead(trials=[TrialRead.of(t) for t in studies.best_trials(db, principal, study_id)])


@router.post("/{study_id}/extrapolate", response_model=ExtrapolationRead)
def extrapolate(
    study_id: str, body: ExtrapolateRequest, db: DatabaseDep, principal: PrincipalDep
) -> ExtrapolationRead:
    """Map a trial's per-module values (default: the best trial's) to a target shape."""
    result = scaling.extrapolate_trial(
        db,
        principal,
        study_id,
        target=body.target,
        trial_id=body.trial_id,
        use_ladder=body.use_ladder,
    )
    return ExtrapolationRead.model_validate(result.to_json())


@router.post("/{study_id}/refine", status_code=status.HTTP_201_CREATED, response_model=StudyRead)
def refine_study(
    study_id: str,
    db: DatabaseDep,
    principal: ClientDep,
    now: NowDep,
    body: RefineRequest | None = None,
) -> StudyRead:
    """Create a per-module child study seeded from this study's best trial.

    The child has the same family, objective and ``scale``; its space splits the parent's
    global names (``lr``, ``init_std``) into per-role names ranged around the best value,
    with the best queued as its first trial. 409 ``no-completed-trial`` before any trial
    completes; 422 when the study has no ``scale`` or no global name to split.
    """
    b = body or RefineRequest()
    request = refine.Refinement(
        name=b.name,
        roles=b.roles,
        span_octaves=b.span_octaves,
        algorithm=b.algorithm,
        max_trials=b.max_trials,
        keep_global=b.keep_global,
    )
    return StudyRead.of(refine.refine_study(db, principal, study_id, request, now=now))


@router.post("/{study_id}/rungs", status_code=status.HTTP_201_CREATED, response_model=RungsRead)
def create_rungs(
    study_id: str, body: RungsRequest, db: DatabaseDep, principal: ClientDep, now: NowDep
) -> RungsRead:
    """Create the depth rungs the family ladder needs to carry this study to ``target``.

    One study per depth of the plan (the proxy's own, then doubling up to the target's),
    at the proxy's width: ``param`` on a grid of octaves around the best, every other
    value pinned, each point queued ``replicates`` times, no engine trials. Once workers
    finish them, ``extrapolate`` on the family's studies applies the fitted drift. 409
    ``no-completed-trial`` before any trial completes; 422 without a family or ``scale``,
    or when the target is no deeper than the proxy.
    """
    request = ladder_rungs.RungRequest(
        target=body.target,
        param=body.param,
        offsets=body.offsets,
        replicates=body.replicates,
        trial_id=body.trial_id,
    )
    created = ladder_rungs.create_depth_rungs(db, principal, study_id, request, now=now)
    return RungsRead(studies=[StudyRead.of(s) for s in created])
