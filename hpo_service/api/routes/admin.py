"""Admin routes: history across tenants, export, statistics, API keys, audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from hpo_service.api.auth_cache import AuthCache
from hpo_service.api.deps import AdminDep, DatabaseDep, NowDep
from hpo_service.api.metrics import Metrics
from hpo_service.api.schemas.admin import (
    AdminTrialRead,
    AuditRead,
    KeyCreate,
    KeyCreated,
    KeyRead,
    StatsRead,
)
from hpo_service.api.schemas.common import Page
from hpo_service.db.repositories import TrialFilter
from hpo_service.db.repositories.admin import HistoryOrder
from hpo_service.domain import Role
from hpo_service.services import audit, export, history, keys_admin
from hpo_service.services.stats import stats as service_stats

router = APIRouter(prefix="/v1/admin", tags=["admin"])

PageSize = Annotated[int, Query(ge=1, le=1000)]
TrialStateParam = Literal["requested", "active", "stopping", "completed", "failed", "infeasible"]


@router.get("/trials", response_model=Page[AdminTrialRead])
def list_trials(
    db: DatabaseDep,
    principal: AdminDep,
    study_id: str | None = None,
    family: str | None = None,
    tenant: str | None = None,
    state: TrialStateParam | None = None,
    worker_id: str | None = None,
    since: Annotated[
        datetime | None, Query(description="Inclusive lower bound of the ordering timestamp.")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Exclusive upper bound of the ordering timestamp.")
    ] = None,
    order_by: Annotated[
        HistoryOrder,
        Query(
            description="`created_at` (default) or `finished_at`, `-` for newest first; "
            "`finished_at` orderings list finished trials only. `since`/`until` bound "
            "the same timestamp."
        ),
    ] = "created_at",
    page_size: PageSize = 50,
    page_token: str | None = None,
) -> Page[AdminTrialRead]:
    """Trials of every study and tenant, filtered, in a stable keyset order."""
    flt = TrialFilter(
        study_id=study_id,
        family=family,
        tenant=tenant,
        state=state,
        worker_id=worker_id,
        since=since,
        until=until,
    )
    page = history.list_trials(
        db, principal, flt, order_by=order_by, page_size=page_size, page_token=page_token
    )
    return Page[AdminTrialRead](
        items=[AdminTrialRead.of_admin(t) for t in page.items],
        next_page_token=page.next_page_token,
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One record per trial, streamed.",
            "content": {
                "text/csv": {},
                "application/x-ndjson": {},
                "application/vnd.apache.parquet": {},
            },
        }
    },
)
def export_history(
    db: DatabaseDep,
    principal: AdminDep,
    now: NowDep,
    format: Literal["csv", "jsonl", "parquet"] = "jsonl",
    study_id: str | None = None,
) -> StreamingResponse:
    """Stream every trial (or one study's) as CSV, JSON lines or Parquet."""
    result = export.history_stream(db, principal, fmt=format, study_id=study_id, now=now)
    return StreamingResponse(
        result.chunks,
        media_type=result.media_type,
        headers={"Content-Disposition": f'attachment; filename="{result.filename}"'},
    )


@router.get("/stats", response_model=StatsRead)
def stats(
    request: Request, db: DatabaseDep, principal: AdminDep, now: NowDep, tenant: str | None = None
) -> StatsRead:
    """Counts by state and source, leases, workers, and latency figures."""
    figures = service_stats(db, principal, now=now, tenant=tenant)
    metrics: Metrics = request.app.state.metrics
    return StatsRead.of(figures, metrics.latency_summary())


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_key(body: KeyCreate, db: DatabaseDep, principal: AdminDep, now: NowDep) -> KeyCreated:
    """Issue a key; the response is the only place its secret ever appears."""
    issued = keys_admin.create_key(
        db,
        principal,
        role=Role(body.role),
        tenant=body.tenant,
        name=body.name,
        expires_at=body.expires_at,
        now=now,
    )
    return KeyCreated(
        id=issued.id,
        key=issued.key,
        role=issued.role.value,
        tenant=issued.tenant,
        name=issued.name,
        created_at=issued.created_at,
        expires_at=issued.expires_at,
    )


@router.get("/keys", response_model=Page[KeyRead])
def list_keys(
    db: DatabaseDep,
    principal: AdminDep,
    tenant: str | None = None,
    page_size: PageSize = 50,
    page_token: str | None = None,
) -> Page[KeyRead]:
    """Every key, revoked ones included, oldest first; never a secret."""
    page = keys_admin.list_keys(
        db, principal, tenant=tenant, page_size=page_size, page_token=page_token
    )
    return Page[KeyRead](
        items=[KeyRead.of(k) for k in page.items], next_page_token=page.next_page_token
    )


@router.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_key(
    request: Request, key_id: str, db: DatabaseDep, principal: AdminDep, now: NowDep
) -> Response:
    """Revoke a key: it stops authenticating at once here (its dashboard sessions too).

    This process forgets the key in the same request; other server processes within
    ``HPO_AUTH_CACHE_SECONDS`` (see ``Settings``).
    """
    keys_admin.revoke_key(db, principal, key_id, now=now)
    cache: AuthCache = request.app.state.auth_cache
    cache.forget_key(key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit", response_model=Page[AuditRead])
def list_audit(
    db: DatabaseDep,
    principal: AdminDep,
    action: str | None = None,
    actor_key_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: PageSize = 50,
    page_token: str | None = None,
) -> Page[AuditRead]:
    """Admin and key actions, newest first."""
    page = audit.list_entries(
        db,
        principal,
        action=action,
        actor_key_id=actor_key_id,
        since=since,
        until=until,
        page_size=page_size,
        page_token=page_token,
    )
    return Page[AuditRead](
        items=[AuditRead.of(e) for e in page.items], next_page_token=page.next_page_token
    )
