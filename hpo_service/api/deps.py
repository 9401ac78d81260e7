"""Dependencies as ``Annotated`` aliases, so handler signatures stay short.

Every dependency here is ``async def`` on purpose: FastAPI runs a plain ``def``
dependency in the thread pool, and each hop to a worker thread and back costs more than
the dependency itself; profiled, when a report declared five sync dependencies
(database, settings, now, principal, role), the hops were a quarter of the server's CPU.
None of them blocks: the only one that may touch the database (an authentication that
misses the cache) hands that call to the thread pool itself.

Worker routes take one ``WorkerCallDep`` instead of four: FastAPI's resolution of each
dependency (signature walk, cache lookup, call) cost about as much as a heartbeat's
own UPDATE, and a worker route always needs the same four things.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from hpo_service.api.auth_cache import AuthCache
from hpo_service.api.auth_throttle import FailedAuthLimiter
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.domain import Principal, Role
from hpo_service.errors import AuthenticationError
from hpo_service.services import api_keys
from hpo_service.services.access import require_role

__all__ = [
    "AdminDep",
    "ClientDep",
    "DatabaseDep",
    "NowDep",
    "PrincipalDep",
    "SettingsDep",
    "WorkerCall",
    "WorkerCallDep",
]


async def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _source(request: Request, token: str | None) -> str:
    """Who is trying: the key id named in the token, else the client address."""
    if token and token.count("_") >= 3:
        return "key:" + token.rsplit("_", 1)[0]
    return "addr:" + (request.client.host if request.client else "unknown")


async def _now() -> datetime:
    return utcnow()


async def _principal(request: Request) -> Principal:
    db: Database = request.app.state.db
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    token = _bearer(request)
    source = _source(request, token)
    limiter.check(source)
    cache: AuthCache = request.app.state.auth_cache
    principal = cache.get(token) if token else None
    if principal is None:
        try:
            principal = await run_in_threadpool(api_keys.authenticate, db, token, now=utcnow())
        except AuthenticationError:
            limiter.record_failure(source)
            raise
        if token:
            cache.put(token, principal)
    request.state.principal = principal
    return principal


@dataclass(frozen=True)
class WorkerCall:
    """What every worker route needs: the database, the authenticated worker, settings, now."""

    db: Database
    principal: Principal
    settings: Settings
    now: datetime


async def _worker_call(request: Request) -> WorkerCall:
    """Authenticate a worker-role caller in one step (401, 429, 403 like ``ClientDep``)."""
    principal = await _principal(request)
    require_role(principal, Role.WORKER)
    state = request.app.state
    return WorkerCall(db=state.db, principal=principal, settings=state.settings, now=utcnow())


def _with_role(role: Role):  # type: ignore[no-untyped-def]
    async def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        require_role(principal, role)
        return principal

    return dependency


DatabaseDep = Annotated[Database, Depends(_database)]
SettingsDep = Annotated[Settings, Depends(_settings)]
NowDep = Annotated[datetime, Depends(_now)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
WorkerCallDep = Annotated[WorkerCall, Depends(_worker_call)]
ClientDep = Annotated[Principal, Depends(_with_role(Role.CLIENT))]
AdminDep = Annotated[Principal, Depends(_with_role(Role.ADMIN))]
