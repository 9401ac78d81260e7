"""Transfer routes: a study's learned region, and a preview for a family."""

from __future__ import annotations

from fastapi import APIRouter

from hpo_service.api.deps import ClientDep, DatabaseDep, NowDep, PrincipalDep
from hpo_service.api.schemas.transfer import RegionPreviewRequest, RegionRead
from hpo_service.domain import TransferSpec
from hpo_service.services import transfer

router = APIRouter(tags=["transfer"])


@router.get("/v1/studies/{study_id}/region", response_model=RegionRead)
def get_region(study_id: str, db: DatabaseDep, principal: PrincipalDep) -> RegionRead:
    """The region the study's suggestions come from (404 when it learned none)."""
    return RegionRead.model_validate(transfer.get_region(db, principal, study_id))


@router.post("/v1/families/{family}/region:preview", response_model=RegionRead)
def preview_region(
    family: str, body: RegionPreviewRequest, db: DatabaseDep, principal: ClientDep, now: NowDep
) -> RegionRead:
    """The region a new study of ``family`` would get now, without creating it."""
    spec = TransferSpec(method=body.method, top_k=body.top_k, sources=body.sources)
    view = transfer.preview_region(db, principal, family, space=body.space, spec=spec, now=now)
    return RegionRead.model_validate(view)
